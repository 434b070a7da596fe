"""Compare two models layer by layer: how far each weight matrix moved, and how its spectrum changed.

:func:`compare` reads any two sources htsr reads (modules, state dicts, files,
folders), matches their layers by ``longname`` and returns one row per layer
name found in either model. (The compat ``WeightWatcher.distances`` is
:func:`htsr.compat.distances.reference_distances`.)

The distance between the two ESDs is the Wasserstein-1 (earth mover's)
distance between the empirical distributions of log10 eigenvalues. It was
chosen over the Jensen–Shannon distance because it needs no histogram bins
(JS on binned ESDs changes with the binning), it stays informative when the two
spectra do not overlap at all (JS then saturates at its maximum), it accepts
two ESDs with different numbers of eigenvalues, and its unit is readable: the
mean shift, in decades, needed to turn one spectrum into the other (a layer
whose weights were all scaled by c moves by exactly 2·|log10 c|).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import HtsrError, OptionError
from .tables import Column, Table

if TYPE_CHECKING:
    import pandas as pd

STATUSES = ("ok", "only_a", "only_b", "shape_mismatch", "invalid")
_C = Column
COMPARE = Table("compare", "One row per layer name found in either model (htsr compare).", (
    _C("longname", "str", "The layer's name, by which the two models are matched.", show="cli"),
    _C("layer_type", "str", "dense, embedding, conv1d or conv2d."),
    _C("status", "str", "ok, only_a, only_b, shape_mismatch or invalid.", show="cli"),
    _C("shape_a", "str", "The layer's shape in A."),
    _C("shape_b", "str", "The layer's shape in B."),
    _C("delta_W", "float", "‖W_b − W_a‖_F.", show="cli"),
    _C("rel_delta_W", "float", "delta_W / ‖W_a‖_F.", show="cli"),
    _C("delta_bias", "float", "‖b_b − b_a‖₂ when both have a bias of one shape."),
    _C("cka", "float", "Centered linear CKA of the two weight matrices.", show="cli"),
    _C("alpha_a", "float", "alpha in A.", show="cli"),
    _C("alpha_b", "float", "alpha in B.", show="cli"),
    _C("delta_alpha", "float", "alpha_b − alpha_a.", show="cli"),
    _C("log_norm_a", "float", "log_norm in A."),
    _C("log_norm_b", "float", "log_norm in B."),
    _C("delta_log_norm", "float", "log_norm_b − log_norm_a."),
    _C("esd_distance", "float", "Wasserstein-1 distance of the log10 eigenvalues, in decades.", show="cli"),
    _C("reason", "str", "Why a layer is not ok (or not analyzed)."),
))
COLUMNS = tuple(COMPARE.names)
_NAN = float("nan")


@dataclass(frozen=True)
class LayerComparison:
    """One row of :func:`compare` (see there for the meaning of each field)."""

    longname: str
    layer_type: str
    status: str
    shape_a: str = ""
    shape_b: str = ""
    delta_W: float = _NAN
    rel_delta_W: float = _NAN
    delta_bias: float = _NAN
    cka: float = _NAN
    alpha_a: float = _NAN
    alpha_b: float = _NAN
    log_norm_a: float = _NAN
    log_norm_b: float = _NAN
    esd_distance: float = _NAN
    reason: str = ""

    @property
    def delta_alpha(self) -> float:
        return self.alpha_b - self.alpha_a

    @property
    def delta_log_norm(self) -> float:
        return self.log_norm_b - self.log_norm_a


@dataclass(frozen=True)
class Comparison:
    """What :func:`comparison` returns: the two sources' descriptions and one typed row per layer name."""

    a: str
    b: str
    rows: tuple[LayerComparison, ...]

    def frame(self) -> Any:
        """The rows as the :data:`COMPARE` DataFrame (``attrs`` ``a`` and ``b``: the sources)."""
        frame = COMPARE.frame(self.rows)
        frame.attrs["a"], frame.attrs["b"] = self.a, self.b
        return frame


STATUSES = ("ok", "only_a", "only_b", "shape_mismatch", "invalid")
ESD_FLOOR = 1e-10  # eigenvalues at or below this are left out of the log10 ESD distance


def linear_cka(A: np.ndarray, B: np.ndarray) -> float:
    """Centered linear CKA of two matrices with the same number of rows (rows are the samples).

    ``CKA = ‖ÃᵀB̃‖²_F / (‖ÃᵀÃ‖_F ‖B̃ᵀB̃‖_F)`` with column-centered Ã, B̃
    (Kornblith et al., 2019); 1 for identical matrices and for matrices that
    differ by an orthogonal transform or an isotropic scale, 0 for unrelated
    ones; NaN when either centered matrix is zero (a constant matrix).

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(0).standard_normal((50, 8))
    >>> round(linear_cka(A, 3 * A), 12)
    1.0
    """
    A = np.asarray(A, dtype=np.float64).reshape(A.shape[0], -1)
    B = np.asarray(B, dtype=np.float64).reshape(B.shape[0], -1)
    A = A - A.mean(axis=0)
    B = B - B.mean(axis=0)
    if A.shape[0] <= min(A.shape[1], B.shape[1]):  # the n×n Gram matrices are the smaller ones
        K, L = A @ A.T, B @ B.T
        cross = float(np.sum(K * L))
        den = float(np.linalg.norm(K) * np.linalg.norm(L))
    else:
        cross = float(np.linalg.norm(A.T @ B) ** 2)
        den = float(np.linalg.norm(A.T @ A) * np.linalg.norm(B.T @ B))
    return cross / den if den > 0 else float("nan")


def esd_distance(evals_a: np.ndarray, evals_b: np.ndarray) -> float:
    """Wasserstein-1 distance between the distributions of log10 eigenvalues (in decades).

    Eigenvalues ≤ 1e-10 are left out; NaN when either side has none left.

    Examples
    --------
    >>> import numpy as np
    >>> ev = np.array([1.0, 10.0, 100.0])
    >>> esd_distance(ev, 100 * ev)
    2.0
    """
    from scipy.stats import wasserstein_distance

    a = np.asarray(evals_a, dtype=np.float64)
    b = np.asarray(evals_b, dtype=np.float64)
    a, b = a[a > ESD_FLOOR], b[b > ESD_FLOOR]
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(wasserstein_distance(np.log10(a), np.log10(b)))


def _layers(source: Any, config: Any) -> dict[str, Any]:
    """longname -> Plan for every weight matrix (analyzed or not); the first of tied duplicates."""
    from .engine import plan

    out: dict[str, Any] = {}
    for p in plan(source, config):
        if p.is_layer and p.tensor.longname not in out:
            out[p.tensor.longname] = p
    return out


def _spectra(source: Any, options: dict) -> dict[str, tuple[float, float, np.ndarray | None]]:
    """longname -> (alpha, log_norm, eigenvalues) of the analyzed layers."""
    from .api import analyze

    report = analyze(source, **options)
    out: dict[str, tuple[float, float, np.ndarray | None]] = {}
    for layer in report.layers:  # LayerResult, one per pooled layer
        if layer.slice_id is not None:
            continue
        alpha = float(layer.fit.alpha) if layer.fit is not None else math.nan
        log_norm = float(layer.metrics.log_norm) if layer.metrics is not None else math.nan
        out.setdefault(layer.longname, (alpha, log_norm, layer.evals))
    return out


def as_float64(array: Any, where: str) -> np.ndarray:
    """A float64 copy of a real tensor (zeros allowed); ``LayerError`` for complex, non-numeric or non-finite ones."""
    from .errors import LayerError

    a = np.asarray(array)
    if np.iscomplexobj(a) or a.dtype.kind not in "fiub":
        raise LayerError(f"{where}: not a real-valued tensor (dtype {a.dtype}).")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise LayerError(f"{where}: holds NaN or Inf values.")
    return a


def read_weights(p: Any) -> tuple[np.ndarray, np.ndarray | None]:
    W = as_float64(p.tensor.load(), p.tensor.where)
    b = None
    if p.tensor.bias is not None:
        b = as_float64(p.tensor.bias(), f"the bias of {p.tensor.where}")
    return W, b


def compare(a: Any, b: Any, **options: Any) -> pd.DataFrame:
    """Per-layer differences between two models, matched by layer name.

    Parameters
    ----------
    a, b
        Anything :func:`htsr.analyze` reads (``torch.nn.Module``, state dict, dict of
        numpy arrays, ``.safetensors`` / ``.npz`` / ``.pt`` file, Hugging Face folder).
        ``a`` is the reference side: ``delta_* = b − a`` and ``rel_delta_W`` is relative to ``a``.
    **options
        :func:`htsr.analyze` options for the spectral columns (``layers``, ``min_evals``,
        ``seed`` …). ``pool=False`` is not supported here.

    Returns
    -------
    pandas.DataFrame
        One row per layer name found in either model (``a``'s order, then names only in ``b``):

        ``status``
            ``ok``; ``only_a`` / ``only_b`` (the layer exists in one model only);
            ``shape_mismatch``; ``invalid`` (weights unreadable, NaN/Inf …; ``reason`` says why).
        ``delta_W``, ``rel_delta_W``
            ``‖W_b − W_a‖_F`` and that divided by ``‖W_a‖_F``.
        ``delta_bias``
            ``‖b_b − b_a‖_2`` when both layers have a bias of the same shape, else NaN.
        ``cka``
            centered linear CKA of the two weight matrices (rows: output units), see :func:`linear_cka`.
        ``alpha_a, alpha_b, delta_alpha``, ``log_norm_a, log_norm_b, delta_log_norm``
            from the usual analysis (NaN for a layer the analysis skips: too small, not selected …).
        ``esd_distance``
            Wasserstein-1 distance of the log10 eigenvalues, in decades (see :func:`esd_distance`).

    Examples
    --------
    >>> import numpy as np, htsr
    >>> rng = np.random.default_rng(0)
    >>> a = {"fc.weight": rng.standard_normal((100, 40))}
    >>> b = {"fc.weight": a["fc.weight"] + 0.1, "head.weight": np.ones((10, 40))}
    >>> d = htsr.compare(a, b)
    >>> d[["longname", "status"]].values.tolist()
    [['fc', 'ok'], ['head', 'only_b']]
    >>> round(float(d.loc[0, "delta_W"]), 6)
    6.324555
    """
    return comparison(a, b, **options).frame()


def comparison(a: Any, b: Any, **options: Any) -> Comparison:
    """:func:`compare` as typed rows (:class:`Comparison`); the same arguments."""
    from .config import AnalysisConfig
    from .sources import open_source

    if options.get("pool") is False:
        raise OptionError("compare: pool=False is not supported (layers are compared whole).")
    config = AnalysisConfig.from_kwargs(**options)
    src_a, src_b = open_source(a), open_source(b)
    layers_a, layers_b = _layers(src_a, config), _layers(src_b, config)
    if not layers_a and not layers_b:
        raise HtsrError(f"compare: no weight matrices in {src_a.description} or {src_b.description}.")
    spec_a = _spectra(src_a, options) if any(not p.reason for p in layers_a.values()) else {}
    spec_b = _spectra(src_b, options) if any(not p.reason for p in layers_b.values()) else {}
    names = list(layers_a) + [n for n in layers_b if n not in layers_a]
    rows = []
    for name in names:
        pa, pb = layers_a.get(name), layers_b.get(name)
        p = pa or pb
        assert p is not None
        row = LayerComparison(longname=name, layer_type=p.tensor.layer_type.value, status="ok",
                              shape_a=str(tuple(pa.tensor.shape)) if pa else "",
                              shape_b=str(tuple(pb.tensor.shape)) if pb else "")
        sa, sb = spec_a.get(name), spec_b.get(name)
        if sa:
            row = replace(row, alpha_a=sa[0], log_norm_a=sa[1])
        if sb:
            row = replace(row, alpha_b=sb[0], log_norm_b=sb[1])
        if sa and sb and sa[2] is not None and sb[2] is not None:
            row = replace(row, esd_distance=esd_distance(sa[2], sb[2]))
        if pa is None or pb is None:
            row = replace(row, status="only_a" if pb is None else "only_b",
                          reason=f"no layer {name!r} in {(src_b if pb is None else src_a).description}")
        elif pa.tensor.shape != pb.tensor.shape:
            row = replace(row, status="shape_mismatch",
                          reason=f"shapes differ: {tuple(pa.tensor.shape)} vs {tuple(pb.tensor.shape)}")
        else:
            row = _weights_moved(row, pa, pb)
        rows.append(row)
    return Comparison(src_a.description, src_b.description, tuple(rows))


def _weights_moved(row: LayerComparison, pa: Any, pb: Any) -> LayerComparison:
    """``row`` with the weight distances of two plans of one shape (status 'invalid' when unreadable)."""
    try:
        (Wa, ba), (Wb, bb) = read_weights(pa), read_weights(pb)
    except HtsrError as exc:
        return replace(row, status="invalid", reason=str(exc))
    with np.errstate(all="ignore"):
        delta = float(np.linalg.norm(Wb - Wa))
        norm_a = float(np.linalg.norm(Wa))
        bias = float(np.linalg.norm(bb - ba)) if ba is not None and bb is not None and ba.shape == bb.shape else _NAN
        cka = linear_cka(Wa, Wb) if Wa.ndim >= 2 else _NAN
    return replace(row, delta_W=delta, rel_delta_W=delta / norm_a if norm_a > 0 else _NAN, delta_bias=bias, cka=cka,
                   reason=f"not analyzed: {pa.reason}" if pa.reason else "")


# ---------------------------------------------------------------------------------------------
# the HTML page of ``htsr compare A B --report FILE.html`` (built with htsr.pages)


def alpha_chart_svg(result: Comparison, width: int = 1200) -> str:
    """Alpha of each layer in A and in B (points joined per model), with the α < 2 and α > 6 bands."""
    from . import pages

    rows = [r for r in result.rows if not (math.isnan(r.alpha_a) and math.isnan(r.alpha_b))]
    finite = [v for r in rows for v in (r.alpha_a, r.alpha_b) if math.isfinite(v)]
    top = max(8.0, min(max(finite, default=8.0), 20.0))
    series = [pages.Series(label, [None if math.isnan(v) else v for v in values], colour=colour,
                           tips=[f"{r.longname}: alpha {label} = {v:.3f}" for r, v in zip(rows, values)])
              for label, colour, values in (("A", "#4477aa", [r.alpha_a for r in rows]),
                                            ("B", "#ee7733", [r.alpha_b for r in rows]))]
    spec = pages.Chart(x_label="layer, in the table's order (hover a point for its name)", y_label="alpha",
                       x_ticks=[str(i) for i in range(len(rows))], bands=pages.ALPHA_BANDS, y_max=top, width=width)
    return pages.chart(series, spec)


def render_html(result: Comparison | Any) -> str:
    """A self-contained HTML page: what was compared, the alpha chart, and the per-layer table."""
    from . import pages

    if not isinstance(result, Comparison):
        raise TypeError("render_html takes the Comparison of htsr.compare.comparison()")
    counts: dict[str, int] = {}
    for r in result.rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    intro = (f"<p>A: {pages.esc(result.a)}<br>B: {pages.esc(result.b)}</p>"
             f"<p>{len(result.rows)} layers: " + ", ".join(f"{v} {pages.esc(k)}" for k, v in counts.items()) + ".</p>"
             "<p class=\"note\">delta columns are B − A; <code>esd_distance</code> is the Wasserstein-1 distance "
             "between the two layers' log10 eigenvalue distributions, in decades.</p>")
    names = COMPARE.view_order(COMPARE.names)
    names.insert(0, names.pop(names.index("longname")))
    sections = [
        pages.Section("models", "Models", intro),
        pages.Section("alpha", "Alpha per layer", alpha_chart_svg(result)),
        pages.Section("layers", "Layers", pages.declared_table(COMPARE, result.rows, names, table_id="layer-table")),
    ]
    return pages.page("htsr compare", f"{result.a} → {result.b}", sections)
