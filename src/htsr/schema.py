"""The declared tables of a run and the typed rows they read.

:data:`DETAILS` (one row per analyzed layer; ``docs/columns.md`` is generated
from it), :data:`SKIPPED`, :data:`DESCRIBE`, :data:`TRAPS` and
:data:`TRAP_GROUPS`, each one :class:`~htsr.tables.Table` of
:class:`~htsr.tables.Column` s; and the typed rows besides
:class:`~htsr.results.LayerResult` that they read: :class:`SkippedLayer`,
:class:`PlannedTensor`, :class:`ReportTrap`. :mod:`htsr.report` derives the
frames, :mod:`htsr.html` and :mod:`htsr.texttables` render these declarations.

Where a new column goes: a field on the spectral result it comes from (or a
property of :class:`~htsr.results.LayerResult`) and one ``Column`` line in
:data:`DETAILS`; ``show="cli"`` / ``"html"`` puts it in the short tables too.
Column order of the details follows the reference: ``layer_id, name``, then the
reference's columns in ASCII order, then htsr's own (``reason`` …).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .tables import Column, Table

if TYPE_CHECKING:
    from .config import AnalysisConfig
    from .engine import Plan
    from .results import LayerResult

_C = Column
DETAILS = Table("details", "One row per analyzed layer (per conv slice with pool=False).", (
    _C("layer_id", "int", "Module index in model.modules() (modules) or 1-based count of .weight keys (files, dicts).", "core", "reference", "layer_id", show="cli"),
    _C("name", "str", "Short name: the attribute name (modules) or the key without .weight.", "core", "reference", "name", show="cli"),
    _C("D", "float", "Kolmogorov–Smirnov distance of the power-law fit at the chosen xmin.", "core", "reference", "fit.D", show="cli"),
    _C("ERG_gap", "int", "detX: num_ERG_spikes − num_pl_spikes.", "detX", "reference", "erg_gap"),
    _C("Lambda", "float", "fit='TPL'/'E_TPL': exponential cut-off Λ of the truncated power law x^(−alpha)·e^(−Λx).", "tpl", "reference", "fit.Lambda"),
    _C("M", "int", "Smaller dimension of each matrix (slice).", "core", "reference", "M", show="cli"),
    _C("N", "int", "Larger dimension of each matrix (slice).", "core", "reference", "N", show="cli"),
    _C("Q", "float", "Aspect ratio N/M.", "core", "reference", "Q"),
    _C("W_scale", "float", "sqrt(n / Σλ): the factor that rescales the eigenvalues to mean 1 for the MP fit.", "mp_fit", "reference", "mp.W_scale"),
    _C("Xflag", "bool", "intra: True on a row of the product of two consecutive layers (name 'i X j ').", "intra", "reference", "xflag"),
    _C("alpha", "float", "Power-law exponent of the ESD tail (≈2 well trained, <2 over-trained, >6 under-trained); NaN if the fit failed.", "core", "reference", "fit.alpha", show="cli"),
    _C("alpha_weighted", "float", "alpha · log10(lambda_max).", "core", "reference", "metrics.alpha_weighted", show="cli"),
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
    _C("layer_type", "str", "dense, embedding, conv1d or conv2d.", "core", "reference", "layer_type", show="cli"),
    _C("log_alpha_norm", "float", "log10 Σ λ^alpha.", "core", "reference", "metrics.log_alpha_norm"),
    _C("log_norm", "float", "log10 of the squared Frobenius norm Σλ.", "core", "reference", "metrics.log_norm"),
    _C("log_spectral_norm", "float", "log10 lambda_max.", "core", "reference", "metrics.log_spectral_norm", show="cli"),
    _C("longname", "str", "Dotted path of the module or the full key.", "core", "reference", "longname"),
    _C("matrix_rank", "int", "#{singular values > s_max·N·ε}.", "core", "reference", "metrics.matrix_rank"),
    _C("max_rand_eval", "float", "Largest eigenvalue of the randomized (elementwise shuffled) matrix.", "randomize", "reference", "randomized.max_eval"),
    _C("mp_softrank", "float", "bulk_max / lambda_max.", "mp_fit", "reference", "mp.mp_softrank", show="cli"),
    _C("norm", "float", "Squared Frobenius norm Σλ.", "core", "reference", "metrics.norm"),
    _C("num_evals", "int", "Number of eigenvalues, M·rf.", "core", "reference", "num_evals"),
    _C("num_ERG_spikes", "int", "detX: the same count as detX_num (the reference's ERG name).", "detX", "reference", "detx.num"),
    _C("num_fingers", "int", "fix_fingers='clip_xmax': number of top eigenvalues clipped off as fingers (0: none).", "fingers", "reference", "fit.num_fingers"),
    _C("num_pl_spikes", "int", "#{λ ≥ xmin}: eigenvalues in the power-law tail.", "core", "reference", "fit.num_pl_spikes", show="cli"),
    _C("num_spikes", "int", "Eigenvalues above the MP bulk edge plus its Tracy–Widom margin.", "mp_fit", "reference", "mp.num_spikes", show="cli"),
    _C("num_traps", "int", "htsr: randomized spikes left once the mean's rank-one outlier is accounted for (correlation traps).", "randomize", "reference", "traps.num_traps", show="cli"),
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
    _C("status", "str", "success, failed (the fit failed: alpha NaN) or invalid (bad weights).", "core", "reference", "status", show="html"),
    _C("sv_max", "float", "Largest singular value.", "core", "reference", "esd.sv_max"),
    _C("sv_min", "float", "Smallest singular value (conv: the largest of the slices' minima).", "core", "reference", "esd.sv_min"),
    _C("tail_mean_loc_ratio", "float", "vectors: mean of the eigenvectors' localization ratio ‖v‖₁/‖v‖∞ (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_mean_loc_ratio"),
    _C("tail_var_loc_ratio", "float", "vectors: variance of the eigenvectors' localization ratio ‖v‖₁/‖v‖∞ (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_var_loc_ratio"),
    _C("tail_mean_part_ratio", "float", "vectors: mean of the eigenvectors' participation ratio ‖v‖₂/‖v‖₄ (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_mean_part_ratio"),
    _C("tail_var_part_ratio", "float", "vectors: variance of the eigenvectors' participation ratio ‖v‖₂/‖v‖₄ (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_var_part_ratio"),
    _C("tail_mean_vec_entropy", "float", "vectors: mean of the eigenvectors' discrete entropy (100-bin histogram of |v| − mean) (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_mean_vec_entropy"),
    _C("tail_var_vec_entropy", "float", "vectors: variance of the eigenvectors' discrete entropy (100-bin histogram of |v| − mean) (eigenvalue ≥ xmin).", "vectors", "reference", "vectors.tail_var_vec_entropy"),
    _C("warning", "str", "over-trained (alpha < 2), under-trained (alpha > 6) or empty.", "core", "reference", "warning", show="cli"),
    _C("weak_rank_loss", "int", "#{λ < tolerance (1e-6)}.", "core", "reference", "metrics.weak_rank_loss"),
    _C("ww_maxdist", "float", "lambda_max − max_rand_eval.", "randomize", "reference", "randomized.maxdist"),
    _C("ww_softrank", "float", "max_rand_eval / lambda_max.", "randomize", "reference", "randomized.softrank"),
    _C("xmax", "float", "Largest eigenvalue used in the fit (pl_package='powerlaw': the xmax cut-off, empty without one).", "core", "reference", "fit.xmax"),
    _C("xmin", "float", "Start of the power-law tail chosen by the fit.", "core", "reference", "fit.xmin"),
    _C("slice_id", "int", "Kernel position of this row when pool=False.", "slice", "reference", "slice_id", show="html"),
    _C("rand_mean_spike", "bool", "htsr: one randomized spike (usually the largest) is the outlier a non-zero mean of W produces, not a trap.", "randomize", "htsr", "traps.mean_spike"),
    _C("rand_mean_spike_eval", "float", "htsr: the eigenvalue predicted for the mean's outlier (NaN when the mean is too small to leave the bulk).", "randomize", "htsr", "traps.mean_eval"),
    _C("storage", "str", "htsr: what the file stores: the dtype (bf16, f32 …) or the quantization the matrix was dequantized from (gptq-int4/g128, fp8_e4m3/block128, bnb-nf4 …).", "htsr", "htsr", "storage"),
    _C("reason", "str", "htsr: why a row failed or is invalid; notes on conversions (empty on plain success).", "htsr", "htsr", "reason", show="html"),
))
#: The details' columns (the declaration is :data:`DETAILS`; kept for readers of the old name).
SCHEMA: tuple[Column, ...] = DETAILS.columns
SUMMARY_KEYS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank")


@dataclass(frozen=True)
class SkippedLayer:
    """A weight matrix the plan left out, and why (gates, filters, ties, memory)."""

    layer_id: int
    name: str
    longname: str
    layer_type: str
    shape: str
    reason: str

    @classmethod
    def from_plan(cls, p: Plan) -> SkippedLayer:
        t = p.tensor
        return cls(t.layer_id, t.name, t.longname, t.layer_type.value, str(tuple(t.shape)), p.reason)


@dataclass(frozen=True)
class PlannedTensor:
    """One row of :func:`htsr.describe`: a tensor, its geometry and whether it will be analyzed."""

    layer_id: int
    name: str
    longname: str
    layer_type: str
    shape: str
    dtype: str
    N: int | None
    M: int | None
    Q: float | None
    rf: int | None
    num_evals: int | None
    analyzed: bool
    state: str  # the census: 'analyzed', 'skipped' or 'auxiliary'
    reason: str

    @classmethod
    def from_plan(cls, p: Plan) -> PlannedTensor:
        t, g = p.tensor, p.geometry
        return cls(t.layer_id, t.name, t.longname, t.layer_type.value, str(tuple(t.shape)), str(t.dtype),
                   g.N if g else None, g.M if g else None, g.Q if g else float("nan"), g.rf if g else None,
                   g.num_evals if g else None, not p.reason, "skipped" if p.reason else "analyzed", p.reason)

    @classmethod
    def rows(cls, p: Plan) -> tuple[PlannedTensor, ...]:
        """The plan's row, then one 'auxiliary' row per key its weight consumes (scales, zero points …)."""
        aux = tuple(cls(p.tensor.layer_id, key, key, "", "", "", None, None, float("nan"), None, None, False,
                        "auxiliary", f"auxiliary of {p.tensor.longname}") for key in p.tensor.aux)
        return (cls.from_plan(p), *aux)


@dataclass(frozen=True)
class ReportTrap:
    """One correlation trap of a report: its layer, eigenvalue, entries and what kind of trap it is.

    ``kind`` is 'shared_dim' (``group`` = its outlier dimension's position in
    :attr:`Report.grouping`, ``shared_index`` = the shared index) or 'isolated'.
    """

    layer_id: int
    name: str
    longname: str
    slice_id: int | None
    trap_eval: float
    bulk_max: float
    entries: tuple
    shape: tuple[int, int] | None
    components: tuple
    kind: str = "isolated"
    group: int | None = None
    shared_index: int | None = None

    @property
    def ratio(self) -> float:
        """trap eigenvalue / randomized bulk edge (NaN when the edge is not positive)."""
        return self.trap_eval / self.bulk_max if self.bulk_max > 0 else float("nan")

    @property
    def key(self) -> tuple[int, int | None]:
        """``(layer_id, slice_id)`` of its row."""
        return self.layer_id, self.slice_id


SKIPPED = Table("skipped", "Layers left out by the gates, filters or as duplicates, with the reason.", (
    _C("layer_id", "int", "The layer's id (as in the details).", path="layer_id", show="cli"),
    _C("name", "str", "Short name.", path="name", show="cli"),
    _C("longname", "str", "Dotted path of the module or the full key.", path="longname"),
    _C("layer_type", "str", "dense, embedding, conv1d or conv2d.", path="layer_type", show="cli"),
    _C("shape", "str", "Shape of the stored tensor.", path="shape", show="cli"),
    _C("reason", "str", "Why it was left out.", path="reason", show="cli"),
))
DESCRIBE = Table("describe", "Every planned tensor, its geometry and whether it will be analyzed.", (
    _C("layer_id", "int", "The layer's id.", show="cli"),
    _C("name", "str", "Short name.", show="cli"),
    _C("longname", "str", "Dotted path of the module or the full key."),
    _C("layer_type", "str", "dense, embedding, conv1d, conv2d or another type.", show="cli"),
    _C("shape", "str", "Shape of the stored tensor.", show="cli"),
    _C("dtype", "str", "Stored dtype.", show="cli"),
    _C("N", "Int", "Larger dimension of each matrix.", show="cli"),
    _C("M", "Int", "Smaller dimension of each matrix.", show="cli"),
    _C("Q", "float", "N/M."),
    _C("rf", "Int", "Number of matrices (kernel positions)."),
    _C("num_evals", "Int", "Eigenvalues that an analysis computes, M·rf.", show="cli"),
    _C("analyzed", "bool", "True when analyze() would analyze it.", show="cli"),
    _C("state", "str", "The census: 'analyzed', 'skipped' (reason says why) or 'auxiliary' (a key consumed by a weight's dequantization, listed after it).", show="cli"),
    _C("reason", "str", "Why not; for an auxiliary, 'auxiliary of <longname>'.", show="cli"),
))
TRAPS = Table("traps", "One row per correlation trap (randomize=True).", (
    _C("layer_id", "int", "The trapped row's layer id.", show="cli"),
    _C("name", "str", "Short name.", show="cli"),
    _C("longname", "str", "Dotted path or key."),
    _C("slice_id", "Int", "Slice of the trap (conv layers)."),
    _C("trap_eval", "float", "The trap's eigenvalue in the shuffled matrix.", show="cli"),
    _C("bulk_max", "float", "The randomized Marchenko–Pastur bulk edge.", show="cli"),
    _C("ratio", "float", "trap_eval / bulk_max.", show="html"),
    _C("entries", "object", "The matrix entries responsible: (row, column, value).", show="html"),
    _C("shape", "object", "(rows, cols) of the analyzed matrix."),
    _C("kind", "str", "shared_dim (on an outlier dimension) or isolated.", show="html"),
    _C("group", "Int", "Row of its outlier dimension in trap_groups (shared_dim only)."),
    _C("shared_index", "Int", "The shared index (shared_dim only)."),
))
TRAP_GROUPS = Table("trap_groups", "One row per outlier dimension: an index the traps of several layers share.", (
    _C("axis", "str", "rows or columns: which axis of the matrices the index is on.", show="cli"),
    _C("index", "int", "The shared index.", show="cli"),
    _C("size", "int", "Length of that axis.", show="cli"),
    _C("num_layers", "int", "Layers whose traps share it.", show="cli"),
    _C("layers", "object", "Those layers' names."),
    _C("axes", "object", "The axis in each layer."),
    _C("num_traps", "int", "Traps on it.", show="cli"),
    _C("max_value", "float", "Largest |w| among its entries.", show="cli"),
    _C("chance", "float", "Expected number of such coincidences by chance.", show="cli"),
))


def column_groups(config: AnalysisConfig) -> set[str]:
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
    ref = sorted(c.name for c in DETAILS.columns if c.origin == "reference" and c.name in present and c.name not in head)
    tail = [c.name for c in DETAILS.columns if c.origin == "htsr" and c.name in present]
    return head + ref + tail


def details_columns(results: Sequence[LayerResult], groups: set[str]) -> list[str]:
    """The details' columns for ``results`` of a run producing ``groups`` (``slice_id`` when a row is a slice)."""
    if any(r.slice_id is not None for r in results):
        groups = groups | {"slice"}
    return column_order(c.name for c in DETAILS.columns if c.group in groups)
