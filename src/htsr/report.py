"""The typed, frozen :class:`Report` of a run, and the frames derived from it.

A :class:`Report` holds what a run produced, typed: the
:class:`~htsr.results.LayerResult` of every row, the
:class:`~htsr.config.AnalysisConfig`, the trap grouping
(:class:`~htsr.spectral.trap_groups.TrapGrouping`) and the skipped layers
(:class:`~htsr.schema.SkippedLayer`). Every DataFrame (``details``,
``summary``, ``skipped``, ``traps``, ``trap_groups``) is derived from those on
first use, through the tables declared in :mod:`htsr.schema` (:data:`DETAILS`
…; ``docs/columns.md`` is generated from it by :func:`columns_markdown`; a test
checks the file).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .files import atomic_write, json_safe
from .schema import (
    DESCRIBE,
    DETAILS,
    SCHEMA,
    SKIPPED,
    SUMMARY_KEYS,
    TRAP_GROUPS,
    TRAPS,
    PlannedTensor,
    ReportTrap,
    SkippedLayer,
    column_groups,
    column_order,
    details_columns,
)

if TYPE_CHECKING:
    import pandas as pd

    from .config import AnalysisConfig
    from .engine import Plan
    from .results import LayerResult
    from .spectral.trap_groups import TrapGroup, TrapGrouping

__all__ = ["DESCRIBE", "DETAILS", "SCHEMA", "SKIPPED", "SUMMARY_KEYS", "TRAP_GROUPS", "TRAPS", "PlannedTensor",
           "Report", "ReportTrap", "SkippedLayer", "column_groups", "column_order", "columns_markdown",
           "details_columns", "skipped_frame", "summarize", "trap_tables"]



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


def _trap_dicts(results: Sequence[LayerResult]) -> list[dict]:
    """The traps of ``results`` as the mappings :func:`~htsr.spectral.trap_groups.group_traps` reads."""
    rows = []
    for r in results:
        if r.traps is None or r.randomized is None or r.randomized.fit is None:
            continue
        for t in r.traps.traps:
            rows.append({"layer_id": r.layer_id, "name": r.name, "longname": r.longname,
                         "slice_id": t.slice if t.slice is not None else r.slice_id, "trap_eval": t.eval,
                         "bulk_max": r.randomized.fit.bulk_max, "entries": tuple(t.entries), "shape": t.shape,
                         "components": t.components})
    return rows


def group_report_traps(results: Sequence[LayerResult]) -> TrapGrouping:
    """The trap grouping of ``results`` (see :mod:`htsr.spectral.trap_groups` and ``docs/traps.md``)."""
    from .spectral.trap_groups import group_traps

    return group_traps(_trap_dicts(results))


def located_traps(results: Sequence[LayerResult], grouping: TrapGrouping) -> tuple[ReportTrap, ...]:
    """Every trap of ``results``, typed, with its kind and outlier dimension from ``grouping``."""
    out = []
    for row, kind, g in zip(_trap_dicts(results), grouping.kinds, grouping.group_of, strict=True):
        out.append(ReportTrap(kind=kind, group=g, shared_index=None if g is None else grouping.groups[g].index,
                              **row))
    return tuple(out)


def trap_tables(results: Sequence[LayerResult]) -> tuple[Any, Any, TrapGrouping]:
    """``Report.traps``, ``Report.trap_groups`` and the grouping they come from."""
    grouping = group_report_traps(results)
    return TRAPS.frame(located_traps(results, grouping)), TRAP_GROUPS.frame(grouping.groups), grouping


def skipped_frame(plans: Sequence[Plan]) -> Any:
    """The layers a plan leaves out, with the reason (1-D tensors and non-layers are not listed)."""
    return SKIPPED.frame([SkippedLayer.from_plan(p) for p in plans if p.reason and p.is_layer])




@dataclass(frozen=True, eq=False)
class Report:
    """Result of :func:`htsr.analyze`: typed results, and the tables derived from them.

    Attributes
    ----------
    layers : tuple of LayerResult
        The typed results, in row order: eigenvalues, fits, randomized ESDs and located traps.
    config : AnalysisConfig
        The options of the run.
    grouping : TrapGrouping
        The traps' outlier dimensions (``groups``) and each trap's kind.
    skipped_layers : tuple of SkippedLayer
        Layers left out by the gates, filters or as duplicates, with the reason.
    meta : dict
        htsr version, source, options, seed, elapsed seconds, date.
    pngs : dict
        Figures already rendered, ``{((layer_id, slice_id), kind): PNG bytes}`` (a cache: filled by the
        plots, reused by the HTML report).

    Derived (computed once, on first use): ``details`` (one row per layer, :data:`DETAILS`),
    ``summary`` (means of the summary metrics; ``num_traps`` is a count), ``skipped``
    (:data:`SKIPPED`), ``traps`` (:data:`TRAPS`; ``kind`` says 'shared_dim' or 'isolated'),
    ``trap_groups`` (:data:`TRAP_GROUPS`; ``docs/traps.md``), ``trap_list`` (the traps, typed) and
    ``columns`` (the details' column names).
    """

    layers: tuple[LayerResult, ...]
    config: AnalysisConfig
    grouping: TrapGrouping
    skipped_layers: tuple[SkippedLayer, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    pngs: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_results(cls, results: Sequence[LayerResult], plans: Sequence[Plan], config: AnalysisConfig,
                     meta: Mapping[str, Any] | None = None) -> Report:
        """The report of a run: ``results`` and the ``plans`` that left layers out."""
        skipped = tuple(SkippedLayer.from_plan(p) for p in plans if p.reason and p.is_layer)
        return cls(layers=tuple(results), config=config, grouping=group_report_traps(results),
                   skipped_layers=skipped, meta=dict(meta or {}))

    @cached_property
    def columns(self) -> list[str]:
        """The details' column names, in order."""
        return details_columns(self.layers, column_groups(self.config))

    @cached_property
    def details(self) -> pd.DataFrame:
        """One row per analyzed layer (per slice with ``pool=False``), columns in :data:`DETAILS` order."""
        return DETAILS.frame(self.layers, self.columns)

    @cached_property
    def summary(self) -> dict:
        """Means of the summary metrics over the layers (``num_traps`` and the trap counts are counts)."""
        summary = summarize(self.details)
        if self.config.randomize:
            summary.update(num_outlier_dims=len(self.grouping.groups), num_isolated_traps=self.grouping.num_isolated)
        return summary

    @cached_property
    def skipped(self) -> pd.DataFrame:
        """Layers left out, with the reason (:data:`SKIPPED`)."""
        return SKIPPED.frame(self.skipped_layers)

    @cached_property
    def trap_list(self) -> tuple[ReportTrap, ...]:
        """Every correlation trap, typed, in row order."""
        return located_traps(self.layers, self.grouping)

    @cached_property
    def traps(self) -> pd.DataFrame:
        """One row per correlation trap (:data:`TRAPS`)."""
        return TRAPS.frame(self.trap_list)

    @cached_property
    def trap_groups(self) -> pd.DataFrame:
        """One row per outlier dimension (:data:`TRAP_GROUPS`)."""
        return TRAP_GROUPS.frame(self.grouping.groups)

    def traps_of(self, key: tuple[int, int | None]) -> list[ReportTrap]:
        """The traps of one row ``(layer_id, slice_id)``."""
        return [t for t in self.trap_list if t.key == tuple(key)]

    def group(self, trap: ReportTrap) -> TrapGroup | None:
        """The outlier dimension a trap lies on (None for an isolated trap)."""
        return None if trap.group is None else self.grouping.groups[trap.group]

    def layer(self, layer_id: int, slice_id: int | None = None) -> LayerResult:
        """The :class:`~htsr.results.LayerResult` of one row (``KeyError`` when absent)."""
        for r in self.layers:
            if r.key == (layer_id, slice_id):
                return r
        raise KeyError((layer_id, slice_id))

    def __repr__(self) -> str:
        n = len(self.layers)
        s = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.summary.items())
        from .verdict import verdict_text

        return f"<htsr.Report: {n} layers analyzed, {len(self.skipped_layers)} skipped; {s}>\n{verdict_text(self)}"

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
            "meta": dict(self.meta),
            "summary": self.summary,
            "details": self.details.to_dict(orient="records"),
            "skipped": self.skipped.to_dict(orient="records"),
            "traps": self.traps.to_dict(orient="records"),
            "trap_groups": self.trap_groups.to_dict(orient="records"),
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
    """``docs/columns.md``: every column of :data:`DETAILS` (a test keeps the file equal to this)."""
    lines = ["# Output columns", "", f"Generated from `htsr.schema.DETAILS`: `{REGENERATE_COLUMNS_DOC}`.", "",
             DETAILS.markdown()]
    return "\n".join(lines) + "\n"
