"""The command line's text output: fixed-width tables, the report's text, JSON records and the fail-on policy.

Everything here reads typed rows through a declared :class:`~htsr.tables.Table`
(the report's :class:`~htsr.results.LayerResult` s, typed traps and outlier
dimensions, :func:`htsr.describe`'s planned tensors, :func:`htsr.compare`'s
layer comparisons); :mod:`htsr.cli` only parses arguments and calls these.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .files import is_missing, json_safe
from .spectral.powerlaw import OVER_TRAINED, UNDER_TRAINED  # the alpha thresholds, declared once

if TYPE_CHECKING:
    from .report import Report
    from .tables import Table

#: What ``--fail-on`` can name.
FAIL_ON = ("over-trained", "under-trained", "traps", "outlier-dims")
#: The ``--fail-on`` items that need ``randomize=True``.
NEEDS_RANDOMIZE = ("traps", "outlier-dims")


def clean(text: Any, limit: int | None = None, keep_tail: bool = True) -> str:
    """A model string made safe for a terminal: control characters escaped, long strings shortened
    (names keep their informative tail, other text its head)."""
    s = "" if text is None else str(text)
    s = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in s)
    if limit and len(s) > limit:
        s = "…" + s[-(limit - 1):] if keep_tail else s[:limit - 1] + "…"
    return s


def cell(v: Any, name: bool = True) -> str:
    """One value as table text: '-' when missing, yes/no, about four significant digits."""
    if is_missing(v):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        v = float(v)
        if math.isinf(v):
            return str(v)
        return f"{v:.4g}" if abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-3) else f"{v:.3f}"
    return clean(v, 44) if name else clean(v, 80, keep_tail=False)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Number) and not isinstance(v, bool)


def fixed_width(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table of ``rows`` (values in ``columns`` order; numbers right-aligned)."""
    cells = [[cell(v, name=c in ("name", "longname")) for c, v in zip(columns, row)] for row in rows]
    numeric = [all(_is_number(row[i]) or is_missing(row[i]) for row in rows) for i in range(len(columns))]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out) + "\n"


def declared_text(table: Table, rows: Sequence[Any], names: Sequence[str] | None = None) -> str:
    """The fixed-width table of typed ``rows``: ``names`` (default: the table's short 'cli' set)."""
    names = table.shown(table.names, "cli") if names is None else list(names)
    return fixed_width(names, table.cells(rows, names))


def records_json(table: Table, rows: Sequence[Any], names: Sequence[str] | None = None) -> str:
    """Typed ``rows`` as a JSON list of records (NaN → null)."""
    names = table.names if names is None else list(names)
    records = [{n: (None if is_missing(v) else v) for n, v in zip(names, row)} for row in table.cells(rows, names)]
    return json.dumps(json_safe(records), indent=1, default=str) + "\n"


def report_columns(report: Report) -> list[str]:
    """The CLI table's columns: the details' short 'cli' set (and ``status`` when a row did not succeed)."""
    from .schema import DETAILS

    cols = DETAILS.shown(report.columns, "cli")
    if "slice_id" in report.columns and "slice_id" not in cols:
        cols.insert(cols.index("name") + 1 if "name" in cols else 0, "slice_id")
    if any(r.status != "success" for r in report.layers) and "status" not in cols:
        cols.append("status")
    return cols


def report_table(report: Report) -> str:
    """The ``--format table`` text: key columns per layer, then the summary, warnings, traps, skipped, verdict."""
    from .schema import DETAILS

    layers = report.layers
    out = [fixed_width(cols := report_columns(report), DETAILS.cells(layers, cols))]
    n_skip = len(report.skipped_layers)
    out.append(f"\nSummary ({len(layers)} layer(s) analyzed, {n_skip} skipped):\n")
    for k, v in report.summary.items():
        out.append(f"  {k:<20} {cell(v)}\n")
    for label in ("over-trained", "under-trained"):
        hit = [r for r in layers if r.warning == label]
        if hit:
            names = ", ".join(f"{r.layer_id}:{clean(r.name, 44)}" for r in hit)
            out.append(f"{label} (alpha {f'< {OVER_TRAINED:g}' if label == 'over-trained' else f'> {UNDER_TRAINED:g}'}): {len(hit)} layer(s): "
                       f"{names}\n")
    for r in layers:
        if r.status != "success":
            out.append(f"{r.status}: layer {r.layer_id} {clean(r.name, 44)}: {clean(r.reason, 200)}\n")
    from .engine import SMALL_SAMPLE_NOTE

    small = sum(SMALL_SAMPLE_NOTE in str(r.reason or "") for r in layers)
    if small:  # said once (each row's reason has the details)
        out.append(f"note: {small} layer(s) have {SMALL_SAMPLE_NOTE}: htsr.analyze and the WeightWatcher "
                   "compat class fit those with different estimators and give different alphas (see their reason)\n")
    out.extend(trap_lines(report))
    if n_skip:
        out.append(f"skipped: {n_skip} layer(s)\n")
        counts: dict[str, int] = {}
        for s in report.skipped_layers:
            counts[s.reason] = counts.get(s.reason, 0) + 1
        shown: set[str] = set()
        for s in report.skipped_layers:  # a reason shared by more than 3 layers is one line ("unchanged from base")
            if counts[s.reason] > 3:
                if s.reason not in shown:
                    shown.add(s.reason)
                    out.append(f"  {counts[s.reason]} layers: {clean(s.reason, 200)} (e.g. layer {s.layer_id} "
                               f"{clean(s.name, 44)})\n")
                continue
            out.append(f"  layer {s.layer_id} {clean(s.name, 44)} {s.shape}: {clean(s.reason, 200)}\n")
    from .verdict import verdict_text

    out.append("\nVerdict:\n" + "".join(f"  {line}\n" for line in verdict_text(report).splitlines()))
    return "".join(out)


def trap_lines(report: Report) -> list[str]:
    """Outlier dimensions (traps shared by several layers) first, then the isolated traps."""
    out: list[str] = []
    groups = report.grouping.groups
    if groups:
        out.append(f"outlier dimensions (one index shared by the traps of several layers): {len(groups)}\n")
        for g in groups:
            where = ", ".join(f"{clean(name, 60)} ({axis})" for name, axis in zip(g.layers, g.axes))
            out.append(f"  outlier dimension {g.index}: {g.num_layers} layers, {g.num_traps} traps, "
                       f"max |w| {g.max_value:.3g} ({g.axis} of {g.size}; expected by chance {g.chance:.2g}): "
                       f"{where}\n")
    traps = report.trap_list
    if traps:
        isolated = [t for t in traps if t.kind == "isolated"]
        if isolated or not groups:
            out.append(f"isolated correlation traps: {len(isolated)}\n")
        for t in isolated:
            out.append(f"  layer {t.layer_id} {clean(t.name, 44)}: eigenvalue {cell(t.trap_eval)}"
                       f" vs bulk edge {cell(t.bulk_max)}\n")
    return out


def fail_on_findings(report: Report, fail_on: Sequence[str]) -> list[str]:
    """What ``--fail-on`` finds in ``report``: one phrase per item found ('2 over-trained layer(s)' …)."""
    found = []
    for what in fail_on:
        if what == "traps":
            n = (report.grouping.num_isolated if report.config.randomize else
                 sum(r.traps.num_traps or 0 for r in report.layers if r.traps is not None))
            if n:
                found.append(f"{n} isolated correlation trap(s)")
        elif what == "outlier-dims":
            n = len(report.grouping.groups)
            if n:
                found.append(f"{n} outlier dimension(s) shared by the traps of several layers")
        else:
            n = sum(r.warning == what for r in report.layers)
            if n:
                found.append(f"{n} {what} layer(s)")
    return found
