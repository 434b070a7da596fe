"""The output: one declared schema; the per-layer table, summary, skipped layers and traps; files.

Every column htsr can produce is declared once in :data:`SCHEMA` (name, dtype,
meaning, group, origin, and the :class:`~htsr.results.LayerResult` attribute it
reads); ``docs/columns.md`` is generated from it (:func:`columns_markdown`;
a test checks the file). This module alone turns layer results into DataFrames.
Column order follows the reference: ``layer_id, name``, then the reference's
columns in ASCII order, then htsr's own columns (``reason`` …).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .files import atomic_write, json_safe

if TYPE_CHECKING:
    from .config import AnalysisConfig
    from .engine import Plan
    from .results import LayerResult
    from .spectral.trap_groups import TrapGrouping


@dataclass(frozen=True)
class Column:
    """One output column, declared once.

    ``group`` says when it is present (``core`` and ``htsr`` always; ``randomize``,
    ``mp_fit``, ``detX``, ``vectors`` with those options; ``tpl`` with ``fit='TPL'/'E_TPL'``,
    ``fingers`` with ``fix_fingers='clip_xmax'``, ``intra`` with ``intra=True``; ``slice``
    when a row is a conv slice);
    ``origin`` whether the reference tool has the column (``reference``: sorted in
    ASCII order after ``layer_id, name``, as the reference orders them) or it is
    htsr's own (``htsr``: after them, in declared order); ``path`` the attribute
    of :class:`~htsr.results.LayerResult` it is read from (dotted; a missing part
    gives an empty cell).
    """

    name: str
    dtype: str  # 'int', 'float', 'str', 'bool'
    meaning: str
    group: str  # 'core', 'randomize', 'mp_fit', 'detX', 'tpl', 'fingers', 'vectors', 'intra', 'htsr', 'slice'
    origin: str  # 'reference' or 'htsr'
    path: str

    def value(self, result: Any) -> Any:
        """This column's value for one :class:`~htsr.results.LayerResult` (None when absent)."""
        obj = result
        for part in self.path.split("."):
            obj = getattr(obj, part)
            if obj is None:
                return None
        return obj


_C = Column
SCHEMA: tuple[Column, ...] = (
    _C("layer_id", "int", "Module index in model.modules() (modules) or 1-based count of .weight keys (files, dicts).", "core", "reference", "layer_id"),
    _C("name", "str", "Short name: the attribute name (modules) or the key without .weight.", "core", "reference", "name"),
    _C("D", "float", "Kolmogorov–Smirnov distance of the power-law fit at the chosen xmin.", "core", "reference", "fit.D"),
    _C("ERG_gap", "int", "detX: num_ERG_spikes − num_pl_spikes.", "detX", "reference", "erg_gap"),
    _C("Lambda", "float", "fit='TPL'/'E_TPL': exponential cut-off Λ of the truncated power law x^(−alpha)·e^(−Λx).", "tpl", "reference", "fit.Lambda"),
    _C("M", "int", "Smaller dimension of each matrix (slice).", "core", "reference", "M"),
    _C("N", "int", "Larger dimension of each matrix (slice).", "core", "reference", "N"),
    _C("Q", "float", "Aspect ratio N/M.", "core", "reference", "Q"),
    _C("W_scale", "float", "sqrt(n / Σλ): the factor that rescales the eigenvalues to mean 1 for the MP fit.", "mp_fit", "reference", "mp.W_scale"),
    _C("Xflag", "bool", "intra: True on a row of the product of two consecutive layers (name 'i X j ').", "intra", "reference", "xflag"),
    _C("alpha", "float", "Power-law exponent of the ESD tail (≈2 well trained, <2 over-trained, >6 under-trained); NaN if the fit failed.", "core", "reference", "fit.alpha"),
    _C("alpha_weighted", "float", "alpha · log10(lambda_max).", "core", "reference", "metrics.alpha_weighted"),
    _C("bulk_max", "float", "Marchenko–Pastur bulk edge λ+ of the fit, in the original units.", "mp_fit", "reference", "mp.bulk_max"),
    _C("bulk_min", "float", "Marchenko–Pastur lower edge λ− of the fit, in the original units.", "mp_fit", "reference", "mp.bulk_min"),
    _C("bulk_mean_loc_ratio", "float", "vectors: mean of the eigenvectors' localization ratio ‖v‖₁/‖v‖∞ (eigenvalue < xmin).", "vectors", "reference", "vectors.bulk_mean_loc_ratio"),
    _C("bulk_var_loc_ratio", "float", "vectors: variance of the eigenvectors' localization ratio ‖v‖₁/‖v‖∞ (eigenvalue < xmin).", "vectors", "reference", "vectors.bulk_var_loc_ratio"),
    _C("bulk_mean_part_ratio", "float", "vectors: mean of the eigenvectors' participation ratio ‖v‖₂/‖v‖₄ (eigenvalue < xmin).", "vectors", "reference", "vectors.bulk_mean_part_ratio"),
    _C("bulk_var_part_ratio", "float", "vectors: variance of the eigenvectors' participation ratio ‖v‖₂/‖v‖₄ (eigenvalue < xmin).", "vectors", "reference", "vectors.bulk_var_part_ratio"),
    _C("bulk_mean_vec_entropy", "float", "vectors: mean of the eigenvectors' discrete entropy (100-bin histogram of |v| − mean) (eigenvalue < xmin).", "vectors", "reference", "vectors.bulk_mean_vec_entropy"),
    _C("bulk_var_vec_entropy", "float", "vectors: variance of the eigenvectors' discrete entropy (100-bin histogram of |v| − mean) (eigenvalue < xmin).", "vectors", "reference", "vectors.bulk_var_vec_entropy"),
    _C("detX_num", "int", "detX: number of top rescaled eigenvalues whose product stays ≥ 1.", "detX", "reference", "detx.num"),
    _C("detX_val", "float", "detX: the eigenvalue (original units) at which the product of the larger rescaled ones drops below 1.", "detX", "reference", "detx.val"),
    _C("detX_val_unrescaled", "float", "detX: the same eigenvalue on the rescaled (mean 1) scale (the reference's name, kept).", "detX", "reference", "detx.val_rescaled"),
    _C("entropy", "float", "Matrix entropy −Σ p ln p / ln(matrix_rank), p = λ/Σλ.", "core", "reference", "metrics.entropy"),
    _C("has_esd", "bool", "True when the eigenvalues were computed.", "core", "reference", "has_esd"),
    _C("lambda_max", "float", "Largest eigenvalue of WᵀW.", "core", "reference", "metrics.lambda_max"),
    _C("layer_type", "str", "dense, embedding, conv1d or conv2d.", "core", "reference", "layer_type"),
    _C("log_alpha_norm", "float", "log10 Σ λ^alpha.", "core", "reference", "metrics.log_alpha_norm"),
    _C("log_norm", "float", "log10 of the squared Frobenius norm Σλ.", "core", "reference", "metrics.log_norm"),
    _C("log_spectral_norm", "float", "log10 lambda_max.", "core", "reference", "metrics.log_spectral_norm"),
    _C("longname", "str", "Dotted path of the module or the full key.", "core", "reference", "longname"),
    _C("matrix_rank", "int", "#{singular values > s_max·N·ε}.", "core", "reference", "metrics.matrix_rank"),
    _C("max_rand_eval", "float", "Largest eigenvalue of the randomized (elementwise shuffled) matrix.", "randomize", "reference", "randomized.max_eval"),
    _C("mp_softrank", "float", "bulk_max / lambda_max.", "mp_fit", "reference", "mp.mp_softrank"),
    _C("norm", "float", "Squared Frobenius norm Σλ.", "core", "reference", "metrics.norm"),
    _C("num_evals", "int", "Number of eigenvalues, M·rf.", "core", "reference", "num_evals"),
    _C("num_ERG_spikes", "int", "detX: the same count as detX_num (the reference's ERG name).", "detX", "reference", "detx.num"),
    _C("num_fingers", "int", "fix_fingers='clip_xmax': number of top eigenvalues clipped off as fingers (0: none).", "fingers", "reference", "fit.num_fingers"),
    _C("num_pl_spikes", "int", "#{λ ≥ xmin}: eigenvalues in the power-law tail.", "core", "reference", "fit.num_pl_spikes"),
    _C("num_spikes", "int", "Eigenvalues above the MP bulk edge plus its Tracy–Widom margin.", "mp_fit", "reference", "mp.num_spikes"),
    _C("num_traps", "int", "htsr: randomized spikes left once the mean's rank-one outlier is accounted for (correlation traps).", "randomize", "reference", "traps.num_traps"),
    _C("rand_W_scale", "float", "W_scale of the randomized ESD.", "randomize", "reference", "randomized.fit.W_scale"),
    _C("rand_bulk_max", "float", "MP bulk edge λ+ of the randomized ESD, original units.", "randomize", "reference", "randomized.fit.bulk_max"),
    _C("rand_bulk_min", "float", "MP lower edge λ− of the randomized ESD, original units.", "randomize", "reference", "randomized.fit.bulk_min"),
    _C("rand_distance", "float", "Jensen–Shannon distance between the sorted original and randomized eigenvalues.", "randomize", "reference", "randomized.distance"),
    _C("rand_mp_softrank", "float", "rand_bulk_max / max_rand_eval.", "randomize", "reference", "randomized.fit.mp_softrank"),
    _C("rand_num_spikes", "int", "Randomized eigenvalues above the randomized MP edge (+TW): the reference's trap count.", "randomize", "reference", "randomized.fit.num_spikes"),
    _C("rand_sigma_mp", "float", "MP sigma fitted to the randomized ESD.", "randomize", "reference", "randomized.fit.sigma_mp"),
    _C("rank_loss", "int", "Σ over slices of (#singular values − rank).", "core", "reference", "esd.rank_loss"),
    _C("raw_alpha", "float", "fix_fingers='clip_xmax': alpha of the unclipped fit.", "fingers", "reference", "fit.raw_alpha"),
    _C("rf", "int", "Receptive field: number of slices (kernel positions) pooled.", "core", "reference", "rf"),
    _C("sigma", "float", "Standard error of alpha, (alpha − 1)/sqrt(n tail).", "core", "reference", "fit.sigma"),
    _C("sigma_mp", "float", "MP sigma fitted to the rescaled (mean 1) ESD.", "mp_fit", "reference", "mp.sigma_mp"),
    _C("spectral_norm", "float", "Largest eigenvalue λ_max (the squared spectral norm of W).", "core", "reference", "metrics.spectral_norm"),
    _C("stable_rank", "float", "Σλ / λ_max.", "core", "reference", "metrics.stable_rank"),
    _C("status", "str", "success, failed (the fit failed: alpha NaN) or invalid (bad weights).", "core", "reference", "status"),
    _C("sv_max", "float", "Largest singular value.", "core", "reference", "esd.sv_max"),
    _C("sv_min", "float", "Smallest singular value (conv: the largest of the slices' minima).", "core", "reference", "esd.sv_min"),
    _C("tail_mean_loc_ratio", "float", "vectors: mean of the eigenvectors' localization ratio ‖v‖₁/‖v‖∞ (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_mean_loc_ratio"),
    _C("tail_var_loc_ratio", "float", "vectors: variance of the eigenvectors' localization ratio ‖v‖₁/‖v‖∞ (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_var_loc_ratio"),
    _C("tail_mean_part_ratio", "float", "vectors: mean of the eigenvectors' participation ratio ‖v‖₂/‖v‖₄ (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_mean_part_ratio"),
    _C("tail_var_part_ratio", "float", "vectors: variance of the eigenvectors' participation ratio ‖v‖₂/‖v‖₄ (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_var_part_ratio"),
    _C("tail_mean_vec_entropy", "float", "vectors: mean of the eigenvectors' discrete entropy (100-bin histogram of |v| − mean) (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_mean_vec_entropy"),
    _C("tail_var_vec_entropy", "float", "vectors: variance of the eigenvectors' discrete entropy (100-bin histogram of |v| − mean) (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_var_vec_entropy"),
    _C("warning", "str", "over-trained (alpha < 2), under-trained (alpha > 6) or empty.", "core", "reference", "warning"),
    _C("weak_rank_loss", "int", "#{λ < tolerance (1e-6)}.", "core", "reference", "metrics.weak_rank_loss"),
    _C("ww_maxdist", "float", "lambda_max − max_rand_eval.", "randomize", "reference", "randomized.maxdist"),
    _C("ww_softrank", "float", "max_rand_eval / lambda_max.", "randomize", "reference", "randomized.softrank"),
    _C("xmax", "float", "Largest eigenvalue used in the fit (pl_package='powerlaw': the xmax cut-off, empty without one).", "core", "reference", "fit.xmax"),
    _C("xmin", "float", "Start of the power-law tail chosen by the fit.", "core", "reference", "fit.xmin"),
    _C("slice_id", "int", "Kernel position of this row when pool=False.", "slice", "reference", "slice_id"),
    _C("rand_mean_spike", "bool", "htsr: one randomized spike (usually the largest) is the outlier a non-zero mean of W produces, not a trap.", "randomize", "htsr", "traps.mean_spike"),
    _C("rand_mean_spike_eval", "float", "htsr: the eigenvalue predicted for the mean's outlier (NaN when the mean is too small to leave the bulk).", "randomize", "htsr", "traps.mean_eval"),
    _C("reason", "str", "htsr: why a row failed or is invalid; notes on conversions (empty on plain success).", "htsr", "htsr", "reason"),
)
COLUMNS = {c.name: c for c in SCHEMA}
SUMMARY_KEYS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank")
SKIPPED_COLUMNS = ("layer_id", "name", "longname", "layer_type", "shape", "reason")
DESCRIBE_COLUMNS = ("layer_id", "name", "longname", "layer_type", "shape", "dtype", "N", "M", "Q", "rf", "num_evals",
                    "analyzed", "reason")
TRAP_COLUMNS = ("layer_id", "name", "longname", "slice_id", "trap_eval", "bulk_max", "ratio", "entries",
                "shape", "kind", "group", "shared_index")
TRAP_GROUP_COLUMNS = ("axis", "index", "size", "num_layers", "layers", "axes", "num_traps", "max_value", "chance")


def column_groups(config: "AnalysisConfig") -> set[str]:
    """The column groups a run with ``config`` produces."""
    groups = {"core", "htsr"}
    for option in ("randomize", "mp_fit", "detX", "vectors"):
        if getattr(config, option):
            groups.add(option)
    if config.fit in ("TPL", "E_TPL"):
        groups.add("tpl")
    if config.fix_fingers == "clip_xmax":
        groups.add("fingers")
    if config.intra and not config.stacked:
        groups.add("intra")
    return groups


def column_order(present: Iterable[str]) -> list[str]:
    """Declared order restricted to ``present``: layer_id, name, reference columns (ASCII), htsr columns."""
    present = set(present)
    head = [c for c in ("layer_id", "name") if c in present]
    ref = sorted(c.name for c in SCHEMA if c.origin == "reference" and c.name in present and c.name not in head)
    tail = [c.name for c in SCHEMA if c.origin == "htsr" and c.name in present]
    return head + ref + tail


def _typed(col: Column, values: list) -> Any:
    import numpy as np
    import pandas as pd

    if col.dtype == "float":
        return pd.array([np.nan if v is None else float(v) for v in values], dtype="float64")
    if col.dtype == "int":
        if any(v is None for v in values):
            return pd.array(values, dtype="Int64")
        return pd.array([int(v) for v in values], dtype="int64")
    if col.dtype == "bool":
        if any(v is None for v in values):
            return pd.array(values, dtype="boolean")
        return pd.array([bool(v) for v in values], dtype="bool")
    return pd.array(["" if v is None else str(v) for v in values], dtype="object")


def make_details(results: Sequence["LayerResult"], groups: set[str]) -> Any:
    """DataFrame of the results: every column of ``groups`` (and ``slice_id`` when a row is a slice), typed."""
    import pandas as pd

    if any(r.slice_id is not None for r in results):
        groups = groups | {"slice"}
    order = column_order(c.name for c in SCHEMA if c.group in groups)
    data = {name: _typed(COLUMNS[name], [COLUMNS[name].value(r) for r in results]) for name in order}
    return pd.DataFrame(data, columns=order)


def summarize(details: Any) -> dict:
    """Mean of the summary metrics over analyzed rows (NaN skipped), plus mp_softrank and num_traps when present."""
    out: dict[str, float] = {}
    if details is None or len(details) == 0:
        return out
    keys = list(SUMMARY_KEYS) + [k for k in ("mp_softrank",) if k in details.columns]
    for key in keys:
        if key in details.columns:
            out[key] = float(details[key].astype("float64").mean())
    if "num_traps" in details.columns:
        out["num_traps"] = int(details["num_traps"].fillna(0).sum())
    return out


def trap_tables(results: Sequence["LayerResult"]) -> tuple[Any, Any, "TrapGrouping"]:
    """``Report.traps``, ``Report.trap_groups`` and the grouping they come from.

    One row per correlation trap: the layer, slice, eigenvalue, randomized bulk edge, ratio, entries,
    the analyzed matrix's shape, and its ``kind``: 'shared_dim' (``group`` = its row in the groups
    table, ``shared_index`` = the shared index) or 'isolated'. One row per outlier dimension in the
    groups table (see :mod:`htsr.spectral.trap_groups` and ``docs/traps.md``).
    """
    import pandas as pd

    from .spectral.trap_groups import group_traps

    rows = []
    for r in results:
        if r.traps is None or r.randomized is None or r.randomized.fit is None:
            continue
        edge = r.randomized.fit.bulk_max
        for t in r.traps.traps:
            rows.append({"layer_id": r.layer_id, "name": r.name, "longname": r.longname,
                         "slice_id": t.slice if t.slice is not None else r.slice_id,
                         "trap_eval": t.eval, "bulk_max": edge,
                         "ratio": t.eval / edge if edge > 0 else float("nan"), "entries": list(t.entries),
                         "shape": t.shape, "components": t.components})
    grouping = group_traps(rows)
    for row, kind, g in zip(rows, grouping.kinds, grouping.group_of):
        row.update(kind=kind, group=g, shared_index=None if g is None else grouping.groups[g].index)
    traps = pd.DataFrame(rows, columns=list(TRAP_COLUMNS))
    for name in ("group", "shared_index"):
        traps[name] = pd.array([row[name] for row in rows], dtype="Int64")
    groups = pd.DataFrame([{"axis": g.axis, "index": g.index, "size": g.size, "num_layers": g.num_layers,
                            "layers": list(g.layers), "axes": list(g.axes), "num_traps": g.num_traps,
                            "max_value": g.max_value, "chance": g.chance} for g in grouping.groups],
                          columns=list(TRAP_GROUP_COLUMNS))
    return traps, groups, grouping


def skipped_frame(plans: Sequence["Plan"]) -> Any:
    """The layers a plan leaves out, with the reason (1-D tensors and non-layers are not listed)."""
    import pandas as pd

    rows = [dict(p.tensor.identity(), shape=str(tuple(p.tensor.shape)), reason=p.reason)
            for p in plans if p.reason and p.is_layer]
    return pd.DataFrame(rows, columns=list(SKIPPED_COLUMNS))


def describe_frame(plans: Sequence["Plan"]) -> Any:
    """Every planned tensor, its geometry and whether it will be analyzed."""
    import pandas as pd

    rows = []
    for p in plans:
        g = p.geometry
        rows.append(dict(
            p.tensor.identity(), shape=str(tuple(p.tensor.shape)), dtype=p.tensor.dtype,
            N=g.N if g else pd.NA, M=g.M if g else pd.NA, Q=g.Q if g else float("nan"),
            rf=g.rf if g else pd.NA, num_evals=g.num_evals if g else pd.NA,
            analyzed=not p.reason, reason=p.reason,
        ))
    frame = pd.DataFrame(rows, columns=list(DESCRIBE_COLUMNS))
    for c in ("N", "M", "rf", "num_evals"):
        frame[c] = frame[c].astype("Int64")
    return frame


@dataclass
class Report:
    """Result of :func:`htsr.analyze`.

    Attributes
    ----------
    details : pandas.DataFrame
        One row per analyzed layer (per slice with ``pool=False``), columns in :data:`SCHEMA` order.
    summary : dict
        Means of the summary metrics over the layers (``num_traps`` is a count).
    skipped : pandas.DataFrame
        Layers left out by the gates, filters or as duplicates, with the reason.
    traps : pandas.DataFrame
        One row per correlation trap (with ``randomize=True``); ``kind`` says whether it lies on an
        outlier dimension shared with other layers ('shared_dim') or is 'isolated'.
    trap_groups : pandas.DataFrame
        One row per outlier dimension: an index that the traps of two or more layers share
        (columns :data:`TRAP_GROUP_COLUMNS`; ``docs/traps.md``).
    meta : dict
        htsr version, source, options, seed, elapsed seconds, date.
    layers : tuple of LayerResult
        The typed results the tables are made from, in row order: eigenvalues, fits,
        randomized ESDs and located traps (plots and the HTML report read these).
    pngs : dict
        Figures already rendered, ``{((layer_id, slice_id), kind): PNG bytes}`` (filled by the
        plots, reused by the HTML report).
    """

    details: Any
    summary: dict
    skipped: Any
    traps: Any = None
    trap_groups: Any = None
    meta: dict = field(default_factory=dict)
    layers: tuple = field(default=(), repr=False)
    pngs: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_results(cls, results: Sequence["LayerResult"], plans: Sequence["Plan"], config: "AnalysisConfig",
                     meta: dict | None = None) -> "Report":
        """The report of a run: tables derived from ``results`` and the ``plans`` that left layers out."""
        details = make_details(results, column_groups(config))
        traps, trap_groups, grouping = trap_tables(results)
        summary = summarize(details)
        if config.randomize:
            summary.update(num_outlier_dims=len(grouping.groups), num_isolated_traps=grouping.num_isolated)
        return cls(details=details, summary=summary, skipped=skipped_frame(plans),
                   traps=traps, trap_groups=trap_groups, meta=dict(meta or {}), layers=tuple(results))

    def layer(self, layer_id: int, slice_id: int | None = None) -> "LayerResult":
        """The :class:`~htsr.results.LayerResult` of one row (``KeyError`` when absent)."""
        for r in self.layers:
            if r.key == (layer_id, slice_id):
                return r
        raise KeyError((layer_id, slice_id))

    def __repr__(self) -> str:
        n = len(self.details)
        s = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.summary.items())
        from .verdict import verdict_text

        return f"<htsr.Report: {n} layers analyzed, {len(self.skipped)} skipped; {s}>\n{verdict_text(self)}"

    def _repr_html_(self) -> str:
        """Jupyter's view: the verdict, the summary and the alpha chart (``to_html`` writes the whole report)."""
        from .verdict import notebook_html

        return notebook_html(self)

    def to_csv(self, path: str | os.PathLike | None = None) -> str | None:
        """The details as CSV (float repr round-trips); written atomically to ``path`` when given."""
        buf = io.StringIO()
        self.details.to_csv(buf, index=False, lineterminator="\n")
        text = buf.getvalue()
        if path is None:
            return text
        atomic_write(path, text)
        return None

    def to_json(self, path: str | os.PathLike | None = None) -> str | None:
        """Summary, details, skipped, traps, trap groups and metadata as one JSON document (NaN → null)."""
        doc = {
            "meta": self.meta,
            "summary": self.summary,
            "details": self.details.to_dict(orient="records"),
            "skipped": self.skipped.to_dict(orient="records"),
            "traps": [] if self.traps is None else self.traps.to_dict(orient="records"),
            "trap_groups": [] if self.trap_groups is None else self.trap_groups.to_dict(orient="records"),
        }
        text = json.dumps(json_safe(doc), indent=1, sort_keys=False, default=str)
        if path is None:
            return text
        atomic_write(path, text)
        return None

    def to_html(self, path: str | os.PathLike | None = None) -> str | None:
        """One self-contained HTML report (images inline); written atomically to ``path`` when given."""
        from .html import render_report

        text = render_report(self)
        if path is None:
            return text
        atomic_write(path, text)
        return None


REGENERATE_COLUMNS_DOC = 'python -c "import htsr.report as r; print(r.columns_markdown(), end=\'\')" > docs/columns.md'


def columns_markdown() -> str:
    """``docs/columns.md``: every column of :data:`SCHEMA` (a test keeps the file equal to this)."""
    lines = ["# Output columns", "", f"Generated from `htsr.report.SCHEMA`: `{REGENERATE_COLUMNS_DOC}`.", "",
             "| column | type | group | origin | meaning |", "|---|---|---|---|---|"]
    for c in SCHEMA:
        lines.append(f"| `{c.name}` | {c.dtype} | {c.group} | {c.origin} | {c.meaning} |")
    return "\n".join(lines) + "\n"
