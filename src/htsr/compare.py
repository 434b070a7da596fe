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
from typing import Any

import numpy as np

from .errors import HtsrError, OptionError
from .spectral.powerlaw import OVER_TRAINED, UNDER_TRAINED  # the alpha thresholds, declared once

COLUMNS = (
    "longname", "layer_type", "status", "shape_a", "shape_b", "delta_W", "rel_delta_W", "delta_bias", "cka",
    "alpha_a", "alpha_b", "delta_alpha", "log_norm_a", "log_norm_b", "delta_log_norm", "esd_distance", "reason",
)
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


def compare(a: Any, b: Any, **options: Any):
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
    import pandas as pd

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
    nan = float("nan")
    for name in names:
        pa, pb = layers_a.get(name), layers_b.get(name)
        p = pa or pb
        assert p is not None
        row: dict[str, Any] = {c: nan for c in COLUMNS}
        row.update(longname=name, layer_type=p.tensor.layer_type.value, reason="",
                   shape_a=str(tuple(pa.tensor.shape)) if pa else "", shape_b=str(tuple(pb.tensor.shape)) if pb else "")
        sa, sb = spec_a.get(name), spec_b.get(name)
        if sa:
            row.update(alpha_a=sa[0], log_norm_a=sa[1])
        if sb:
            row.update(alpha_b=sb[0], log_norm_b=sb[1])
        row["delta_alpha"] = row["alpha_b"] - row["alpha_a"]
        row["delta_log_norm"] = row["log_norm_b"] - row["log_norm_a"]
        if sa and sb and sa[2] is not None and sb[2] is not None:
            row["esd_distance"] = esd_distance(sa[2], sb[2])
        if pa is None or pb is None:
            row["status"] = "only_a" if pb is None else "only_b"
            row["reason"] = f"no layer {name!r} in {(src_b if pb is None else src_a).description}"
        elif pa.tensor.shape != pb.tensor.shape:
            row["status"] = "shape_mismatch"
            row["reason"] = f"shapes differ: {tuple(pa.tensor.shape)} vs {tuple(pb.tensor.shape)}"
        else:
            try:
                (Wa, ba), (Wb, bb) = read_weights(pa), read_weights(pb)
                with np.errstate(all="ignore"):
                    row["delta_W"] = float(np.linalg.norm(Wb - Wa))
                    norm_a = float(np.linalg.norm(Wa))
                    row["rel_delta_W"] = row["delta_W"] / norm_a if norm_a > 0 else nan
                    if ba is not None and bb is not None and ba.shape == bb.shape:
                        row["delta_bias"] = float(np.linalg.norm(bb - ba))
                    row["cka"] = linear_cka(Wa, Wb) if Wa.ndim >= 2 else nan
                row["status"] = "ok"
                if pa.reason:
                    row["reason"] = f"not analyzed: {pa.reason}"
            except HtsrError as exc:
                row["status"] = "invalid"
                row["reason"] = str(exc)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs["a"], frame.attrs["b"] = src_a.description, src_b.description
    return frame


# ---------------------------------------------------------------------------------------------
# the HTML page of ``htsr compare A B --report FILE.html``


def alpha_chart_svg(frame: Any, width: int = 900, bar_h: int = 12) -> str:
    """Side-by-side horizontal bars of alpha in A and B for each layer (an inline SVG)."""
    import html

    rows = [r for r in frame.to_dict("records")
            if not (math.isnan(r["alpha_a"]) and math.isnan(r["alpha_b"]))]
    vals = [v for r in rows for v in (r["alpha_a"], r["alpha_b"]) if not math.isnan(v)]
    top = max(vals + [6.5]) * 1.05
    label_w, pad = 220, 8
    plot_w = width - label_w - 2 * pad
    height = len(rows) * (2 * bar_h + 6) + 40

    def x(v: float) -> float:
        return label_w + plot_w * max(v, 0.0) / top

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11" '
              'font-family="sans-serif">')]
    for ref, color in ((OVER_TRAINED, "#c00"), (UNDER_TRAINED, "#888")):
        parts.append(f'<line x1="{x(ref):.1f}" x2="{x(ref):.1f}" y1="0" y2="{height - 30}" stroke="{color}" '
                     f'stroke-dasharray="4,3"/><text x="{x(ref):.1f}" y="{height - 18}" text-anchor="middle">'
                     f'alpha={ref:g}</text>')
    y = 4
    for r in rows:
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h + 3}" text-anchor="end">{html.escape(str(r["longname"]))[:40]}</text>')
        for side, color in (("alpha_a", "#4477aa"), ("alpha_b", "#ee7733")):
            v = r[side]
            if not math.isnan(v):
                parts.append(f'<rect x="{label_w}" y="{y}" width="{x(v) - label_w:.1f}" height="{bar_h - 1}" '
                             f'fill="{color}"><title>{side[-1].upper()}: {v:.3f}</title></rect>')
            y += bar_h
        y += 6
    parts.append(f'<rect x="{label_w}" y="{height - 12}" width="10" height="10" fill="#4477aa"/>'
                 f'<text x="{label_w + 14}" y="{height - 3}">A</text>'
                 f'<rect x="{label_w + 40}" y="{height - 12}" width="10" height="10" fill="#ee7733"/>'
                 f'<text x="{label_w + 54}" y="{height - 3}">B</text></svg>')
    return "".join(parts)


def render_html(frame: Any) -> str:
    """A self-contained HTML page: what was compared, the alpha chart, and the per-layer table."""
    import html

    e = html.escape
    cols = [c for c in COLUMNS if c != "reason"] + ["reason"]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return e(str(v))

    body = "".join("<tr>" + "".join(f"<td>{cell(r[c])}</td>" for c in cols) + "</tr>"
                   for r in frame.to_dict("records"))
    counts = frame["status"].value_counts().to_dict()
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>htsr compare</title><style>"
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 5px}</style></head><body><h1>htsr compare</h1>"
        f"<p>A: {e(str(frame.attrs.get('a', 'A')))}<br>B: {e(str(frame.attrs.get('b', 'B')))}</p>"
        f"<p>{len(frame)} layers: " + ", ".join(f"{v} {e(k)}" for k, v in counts.items()) + ".</p>"
        "<p>delta columns are B − A; <code>esd_distance</code> is the Wasserstein-1 distance between the "
        "two layers' log10 eigenvalue distributions, in decades.</p>"
        f"<h2>alpha per layer</h2>{alpha_chart_svg(frame)}"
        "<h2>Layers</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + f"</tr>{body}</table>"
        "</body></html>"
    )
