"""The output: one declared schema, the per-layer table, summary and files.

Every column htsr can produce is declared once in :data:`SCHEMA` (name,
dtype, meaning, group); ``docs/columns.md`` is generated from it
(``python -m htsr.report > docs/columns.md``). Column order follows the
reference: ``layer_id, name``, then the reference's columns in ASCII order,
then htsr's own columns (``reason`` …).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # 'int', 'float', 'str', 'bool'
    meaning: str
    group: str  # 'core', 'randomize', 'mp_fit', 'detX', 'htsr', 'slice'


_C = Column
SCHEMA: tuple[Column, ...] = (
    _C("layer_id", "int", "Module index in model.modules() (modules) or 1-based count of .weight keys (files, dicts).", "core"),
    _C("name", "str", "Short name: the attribute name (modules) or the key without .weight.", "core"),
    _C("D", "float", "Kolmogorov–Smirnov distance of the power-law fit at the chosen xmin.", "core"),
    _C("M", "int", "Smaller dimension of each matrix (slice).", "core"),
    _C("N", "int", "Larger dimension of each matrix (slice).", "core"),
    _C("Q", "float", "Aspect ratio N/M.", "core"),
    _C("W_scale", "float", "sqrt(n / Σλ): the factor that rescales the eigenvalues to mean 1 for the MP fit.", "mp_fit"),
    _C("alpha", "float", "Power-law exponent of the ESD tail (≈2 well trained, <2 over-trained, >6 under-trained); NaN if the fit failed.", "core"),
    _C("alpha_weighted", "float", "alpha · log10(lambda_max).", "core"),
    _C("bulk_max", "float", "Marchenko–Pastur bulk edge λ+ of the fit, in the original units.", "mp_fit"),
    _C("bulk_min", "float", "Marchenko–Pastur lower edge λ− of the fit, in the original units.", "mp_fit"),
    _C("detX_num", "int", "detX: number of top rescaled eigenvalues whose product stays ≥ 1.", "detX"),
    _C("detX_val", "float", "detX: the eigenvalue (original units) at which the product of the larger rescaled ones drops below 1.", "detX"),
    _C("entropy", "float", "Matrix entropy −Σ p ln p / ln(matrix_rank), p = λ/Σλ.", "core"),
    _C("has_esd", "bool", "True when the eigenvalues were computed.", "core"),
    _C("lambda_max", "float", "Largest eigenvalue of WᵀW.", "core"),
    _C("layer_type", "str", "dense, embedding, conv1d or conv2d.", "core"),
    _C("log_alpha_norm", "float", "log10 Σ λ^alpha.", "core"),
    _C("log_norm", "float", "log10 of the squared Frobenius norm Σλ.", "core"),
    _C("log_spectral_norm", "float", "log10 lambda_max.", "core"),
    _C("longname", "str", "Dotted path of the module or the full key.", "core"),
    _C("matrix_rank", "int", "#{singular values > s_max·N·ε}.", "core"),
    _C("max_rand_eval", "float", "Largest eigenvalue of the randomized (elementwise shuffled) matrix.", "randomize"),
    _C("mp_softrank", "float", "bulk_max / lambda_max.", "mp_fit"),
    _C("norm", "float", "Squared Frobenius norm Σλ.", "core"),
    _C("num_evals", "int", "Number of eigenvalues, M·rf.", "core"),
    _C("num_pl_spikes", "int", "#{λ ≥ xmin}: eigenvalues in the power-law tail.", "core"),
    _C("num_spikes", "int", "Eigenvalues above the MP bulk edge plus its Tracy–Widom margin.", "mp_fit"),
    _C("num_traps", "int", "htsr: randomized spikes left once the mean's rank-one outlier is accounted for (correlation traps).", "randomize"),
    _C("rand_W_scale", "float", "W_scale of the randomized ESD.", "randomize"),
    _C("rand_bulk_max", "float", "MP bulk edge λ+ of the randomized ESD, original units.", "randomize"),
    _C("rand_bulk_min", "float", "MP lower edge λ− of the randomized ESD, original units.", "randomize"),
    _C("rand_distance", "float", "Jensen–Shannon distance between the sorted original and randomized eigenvalues.", "randomize"),
    _C("rand_mp_softrank", "float", "rand_bulk_max / max_rand_eval.", "randomize"),
    _C("rand_num_spikes", "int", "Randomized eigenvalues above the randomized MP edge (+TW): the reference's trap count.", "randomize"),
    _C("rand_sigma_mp", "float", "MP sigma fitted to the randomized ESD.", "randomize"),
    _C("rank_loss", "int", "Σ over slices of (#singular values − rank).", "core"),
    _C("rf", "int", "Receptive field: number of slices (kernel positions) pooled.", "core"),
    _C("sigma", "float", "Standard error of alpha, (alpha − 1)/sqrt(n tail).", "core"),
    _C("sigma_mp", "float", "MP sigma fitted to the rescaled (mean 1) ESD.", "mp_fit"),
    _C("spectral_norm", "float", "Largest eigenvalue λ_max (the squared spectral norm of W).", "core"),
    _C("stable_rank", "float", "Σλ / λ_max.", "core"),
    _C("status", "str", "success, failed (the fit failed: alpha NaN) or invalid (bad weights).", "core"),
    _C("sv_max", "float", "Largest singular value.", "core"),
    _C("sv_min", "float", "Smallest singular value (conv: the largest of the slices' minima).", "core"),
    _C("warning", "str", "over-trained (alpha < 2), under-trained (alpha > 6) or empty.", "core"),
    _C("weak_rank_loss", "int", "#{λ < tolerance (1e-6)}.", "core"),
    _C("ww_maxdist", "float", "lambda_max − max_rand_eval.", "randomize"),
    _C("ww_softrank", "float", "max_rand_eval / lambda_max.", "randomize"),
    _C("xmax", "float", "Largest eigenvalue used in the fit.", "core"),
    _C("xmin", "float", "Start of the power-law tail chosen by the fit.", "core"),
    _C("slice_id", "int", "Kernel position of this row when pool=False.", "slice"),
    _C("rand_mean_spike", "bool", "htsr: one randomized spike (usually the largest) is the outlier a non-zero mean of W produces, not a trap.", "randomize"),
    _C("rand_mean_spike_eval", "float", "htsr: the eigenvalue predicted for the mean's outlier (NaN when the mean is too small to leave the bulk).", "randomize"),
    _C("reason", "str", "htsr: why a row failed or is invalid; notes on conversions (empty on plain success).", "htsr"),
)
COLUMNS = {c.name: c for c in SCHEMA}
SUMMARY_KEYS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank")
SKIPPED_COLUMNS = ("layer_id", "name", "longname", "layer_type", "shape", "reason")
TRAP_COLUMNS = ("layer_id", "name", "longname", "slice_id", "trap_eval", "bulk_max", "ratio", "entries")


def column_order(present: set[str]) -> list[str]:
    """Declared order restricted to the columns present: layer_id, name, reference columns (ASCII), htsr columns."""
    head = ["layer_id", "name"]
    ref = sorted(c.name for c in SCHEMA if c.group in ("core", "mp_fit", "randomize", "detX")
                 and c.name not in head and c.name in present and c.group != "htsr"
                 and c.name not in ("rand_mean_spike", "rand_mean_spike_eval"))
    tail = [c.name for c in SCHEMA if c.name in present and c.name not in head and c.name not in ref]
    return [c for c in head if c in present] + ref + tail


def make_details(rows: list[dict], groups: set[str]):
    """DataFrame of the rows with every column of the requested groups, in declared order, typed."""
    import numpy as np
    import pandas as pd

    names = {c.name for c in SCHEMA if c.group in groups}
    for r in rows:
        names.update(k for k in r if k in COLUMNS)
    order = column_order(names)
    data: dict[str, Any] = {}
    for name in order:
        col = COLUMNS[name]
        values = [r.get(name) for r in rows]
        if col.dtype == "float":
            data[name] = pd.array([np.nan if v is None else float(v) for v in values], dtype="float64")
        elif col.dtype == "int":
            if any(v is None for v in values):
                data[name] = pd.array(values, dtype="Int64")
            else:
                data[name] = pd.array([int(v) for v in values], dtype="int64")
        elif col.dtype == "bool":
            if any(v is None for v in values):
                data[name] = pd.array(values, dtype="boolean")
            else:
                data[name] = pd.array([bool(v) for v in values], dtype="bool")
        else:
            data[name] = pd.array(["" if v is None else str(v) for v in values], dtype="object")
    return pd.DataFrame(data, columns=order)


def summarize(details) -> dict:
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


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8", "newline": ""})) as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return _json_safe(value.item())
        except (ValueError, AttributeError):
            pass
    return value


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
        One row per correlation trap (with ``randomize=True``).
    meta : dict
        htsr version, source, options, seed, elapsed seconds, date.
    esds : dict
        ``{layer_id: eigenvalues}`` (and ``rand_esds``) when kept (``keep_esd=True`` or plots).
    """

    details: Any
    summary: dict
    skipped: Any
    traps: Any = None
    meta: dict = field(default_factory=dict)
    esds: dict = field(default_factory=dict, repr=False)
    rand_esds: dict = field(default_factory=dict, repr=False)
    fits: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        n = len(self.details)
        s = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.summary.items())
        return f"<htsr.Report: {n} layers analyzed, {len(self.skipped)} skipped; {s}>"

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
        """Summary, details, skipped, traps and metadata as one JSON document (NaN → null)."""
        doc = {
            "meta": self.meta,
            "summary": self.summary,
            "details": self.details.to_dict(orient="records"),
            "skipped": self.skipped.to_dict(orient="records"),
            "traps": [] if self.traps is None else self.traps.to_dict(orient="records"),
        }
        text = json.dumps(_json_safe(doc), indent=1, sort_keys=False, default=str)
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


def _columns_markdown() -> str:
    lines = ["# Output columns", "", "Generated from `htsr.report.SCHEMA` (`python -m htsr.report > docs/columns.md`).", "",
             "| column | type | group | meaning |", "|---|---|---|---|"]
    for c in SCHEMA:
        lines.append(f"| `{c.name}` | {c.dtype} | {c.group} | {c.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(_columns_markdown(), end="")
