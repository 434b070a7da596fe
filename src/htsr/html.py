"""One self-contained HTML report of a :class:`~htsr.report.Report` (built with :mod:`htsr.pages`).

The page needs nothing from the network: styles and the small table-sorting script are inline,
the alpha chart is inline SVG and figures are PNG ``data:`` URIs. Every string that can come from the
model file (layer names, source path, reasons, trap entries) is escaped.

Sections: the verdict (a slot at the top, :func:`verdict_block`), run metadata, summary, alpha per
layer (with the α = 2 and α = 6 bands), the per-layer table (a short column set, every column one
click away; click a header to sort; over-/under-trained, failed and trapped rows highlighted),
correlation traps (each trapped layer's original-vs-randomized figure and the matrix entries
responsible), per-layer log-log ESD figures (drawn once: those the plots drew are reused) and the
skipped layers with their reasons. Everything is read from the report's typed objects (its
``LayerResult`` s, config, typed traps and trap grouping), never from its DataFrames. (``report`` is
annotated ``Any``: :mod:`htsr.report` imports this module for ``Report.to_html``, so this one does
not import it back.)
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from . import pages
from .pages import Markup, alpha_chart_svg, esc, fmt  # alpha_chart_svg: the report's chart, kept importable here
from .spectral.powerlaw import OVER_TRAINED, UNDER_TRAINED  # the alpha thresholds, declared once

if TYPE_CHECKING:
    from .config import AnalysisConfig
    from .results import LayerResult
    from .schema import ReportTrap
    from .spectral.trap_groups import TrapGroup


def config_items(config: AnalysisConfig) -> list[tuple[str, Any]]:
    """The run's options as ``(name, plain value)`` pairs, sorted (enums as their values)."""
    out = []
    for f in fields(config):
        v = getattr(config, f.name)
        if f.name == "layers":
            v = {"include": list(v.include), "exclude": list(v.exclude)}
        elif hasattr(v, "value"):
            v = v.value
        out.append((f.name, v))
    return sorted(out)


def layer_columns(report: Any) -> tuple[list[str], list[str]]:
    """The layers table's columns (every details column, the name first) and its short set."""
    from .schema import DETAILS

    order = DETAILS.view_order(report.columns)
    order.insert(0, order.pop(order.index("name")))
    return order, DETAILS.shown(order, "html")


def _row_class(r: LayerResult, trapped: set) -> str:
    classes = []
    if r.warning == "over-trained":
        classes.append("over")
    elif r.warning == "under-trained":
        classes.append("under")
    if r.status not in ("", "success"):
        classes.append("failed")
    if r.key in trapped or (r.traps is not None and (r.traps.num_traps or 0) > 0):
        classes.append("trap")
    return " ".join(classes)


def _warning_tag(v: Any) -> Markup:
    return Markup(f'<span class="tag {"over" if v == "over-trained" else "under"}">{esc(v)}</span>')


def _traps_tag(v: Any) -> Any:
    return Markup(f'<span class="tag trap">{esc(v)}</span>') if v else v


def layers_table(report: Any) -> str:
    """The sortable per-layer table: the short column set, every column one click away."""
    from .schema import DETAILS

    names, short = layer_columns(report)
    trapped = {t.key for t in report.trap_list}
    return pages.declared_table(DETAILS, report.layers, names, short=short, table_id="layer-table",
                                row_classes=[_row_class(r, trapped) for r in report.layers],
                                markup={"warning": _warning_tag, "num_traps": _traps_tag})


def _entries(value: Any) -> Markup:
    items = list(value or ())
    shown = []
    for item in items[:20]:
        if isinstance(item, (list, tuple)) and len(item) == 3:
            r, c, v = item
            shown.append(f"W[{esc(r)}, {esc(c)}] = {esc(fmt(v))}")
        else:
            shown.append(esc(item))
    more = f"<li>… {len(items) - 20} more</li>" if len(items) > 20 else ""
    return Markup("<ul>" + "".join(f"<li>{s}</li>" for s in shown) + more + "</ul>")


def _kind_text(t: ReportTrap) -> str:
    if t.kind == "shared_dim" and t.shared_index is not None:
        return f"outlier dimension {t.shared_index}"
    return t.kind


def _trap_groups_section(groups: tuple[TrapGroup, ...], traps: tuple[ReportTrap, ...]) -> str:
    """The outlier dimensions (one index shared by the traps of several layers), before the layers' traps."""
    if not groups:
        return "<p>No outlier dimension: no index is shared by the traps of two or more layers.</p>"
    shared = sum(1 for t in traps if t.kind == "shared_dim")
    intro = (f"<p>{len(groups)} outlier dimension(s) hold {shared} of the {len(traps)} trap(s): one index of "
             "axes of the same length (a neuron, channel or residual-stream coordinate) carries a large element "
             "in several layers. That is one structure of the model seen in each of those layers, not a sign that "
             "each of them is over-trained on its own; the isolated traps below are private to their layer.</p>")
    out = ['<section class="trap-groups"><h3>Outlier dimensions</h3>', intro, "<ul>"]
    for g in groups:
        out.append(f"<li><b>outlier dimension {esc(g.index)}: {esc(g.num_layers)} layers, "
                   f"max |w| {esc(format(float(g.max_value), '.3g'))}</b> ({esc(g.num_traps)} traps; "
                   f"{esc(g.axis)} of length {esc(g.size)}; expected by chance "
                   f"{esc(format(float(g.chance), '.2g'))})<br><span class=\"note\">"
                   + ", ".join(f"{esc(name)} ({esc(axis)})" for name, axis in zip(g.layers, g.axes))
                   + "</span></li>")
    out.append("</ul></section>")
    return "".join(out)


def traps_section(report: Any, pngs: dict | None) -> str:
    """The correlation traps: outlier dimensions, then each trapped layer's figure and entries."""
    if not report.config.randomize:
        return '<p class="note">Correlation traps are looked for with <code>randomize=True</code> ' \
               '(<code>htsr analyze --randomize</code>); this run did not randomize.</p>'
    traps = report.trap_list
    if not traps:
        return "<p>No correlation traps found.</p>"
    results = {r.key: r for r in report.layers}
    by_row: dict[tuple, list[ReportTrap]] = {}
    for t in traps:
        by_row.setdefault(t.key, []).append(t)
    out = [f"<p>{len(traps)} correlation trap(s) in {len(by_row)} layer(s): randomized eigenvalues right of the "
           "randomized Marchenko–Pastur bulk that the shuffle did not destroy.</p>",
           _trap_groups_section(report.grouping.groups, traps)]
    isolated = {k for k, items in by_row.items() if any(t.kind == "isolated" for t in items)}
    if isolated and len(isolated) < len(by_row):
        out.append("<p>Layers with isolated traps first, then the layers whose traps all lie on an outlier "
                   "dimension.</p>")
    for key, items in sorted(by_row.items(), key=lambda kv: kv[0] not in isolated):
        first = items[0]
        title = f"layer {key[0]}" + (f" slice {key[1]}" if key[1] is not None else "") + f": {first.name}"
        out.append(f'<section class="trap-layer"><h3>{esc(title)}</h3>')
        if first.longname and first.longname != first.name:
            out.append(f'<p class="note">{esc(first.longname)}</p>')
        png = dict(pngs.get(key, [])).get("randesd") if pngs is not None and key in results else None
        if png:
            out.append(f"<figure>{pages.img(png, 'original vs randomized ESD of ' + title)}"
                       "<figcaption>Original ESD (green), randomized (red), largest randomized eigenvalue "
                       "(orange).</figcaption></figure>")
        else:
            out.append('<p class="note">(Figure not available: it needs the layer\'s randomized ESD and '
                       'matplotlib, <code>pip install \'htsr[plot]\'</code>.)</p>')
        out.append(pages.table(["trap eigenvalue", "bulk edge", "ratio", "kind", "entries responsible (row, column, value)"],
                               [[t.trap_eval, t.bulk_max, t.ratio, _kind_text(t), _entries(t.entries)] for t in items],
                               wrap=[4], text_columns=[3, 4]))
        r = results.get(key)
        if r is not None and r.randomized is not None and r.metrics is not None:
            out.append(f'<p class="note">max randomized eigenvalue {esc(fmt(r.randomized.max_eval))}, '
                       f'largest original eigenvalue {esc(fmt(r.metrics.lambda_max))}.</p>')
        out.append("</section>")
    return "".join(out)


def _esd_figures(report: Any, pngs: dict) -> str:
    out = []
    for result in report.layers:
        png = dict(pngs.get(result.key, [])).get("esd")
        if png is None:
            continue
        label = f"layer {result.layer_id}" + (f" slice {result.slice_id}" if result.slice_id is not None else "") \
            + f": {result.name}"
        alpha = fmt(result.fit.alpha if result.fit is not None else None)
        out.append(f"<details><summary>{esc(label)} (alpha {esc(alpha or 'n/a')})</summary>"
                   f"<figure>{pages.img(png, 'log-log ESD of ' + label)}</figure></details>")
    return "".join(out)


def verdict_block(report: Any) -> str:
    """The verdict shown above everything else (:mod:`htsr.verdict`; the page wraps it in its verdict section)."""
    from .verdict import verdict_items_html

    return verdict_items_html(report)


def _figures(report: Any) -> dict | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the page is still complete, just without figures, and says so (render_report)
        return None
    from .plotting import render_pngs
    from .progress import Progress

    kinds = ("esd", "randesd")
    todo = sum(r.esd is not None and any((r.key, k) not in report.pngs for k in kinds) for r in report.layers)
    with Progress(todo, report.config.progress, desc="htsr report", unit="layer") as bar:
        return render_pngs(report, kinds=kinds, on_layer=bar.update)


def render_report(report: Any, figures: bool = True) -> str:
    """The report as one self-contained HTML page.

    Parameters
    ----------
    report : Report
    figures : bool
        Embed figures (the trap overlays and every layer's log-log ESD). Needs matplotlib.

    Returns
    -------
    str
    """
    from .schema import SKIPPED

    pngs = _figures(report) if figures else None
    no_figures = ("<p class=\"note\"><b>No figures:</b> matplotlib is not installed "
                  "(<code>pip install 'htsr[plot]'</code>).</p>" if figures and pngs is None else "")
    meta = report.meta
    layers = report.layers
    source = str(meta.get("source", ""))
    opt_text = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in config_items(report.config))
    run = [("htsr version", meta.get("htsr_version", "")), ("source", source), ("date", meta.get("date", "")),
           ("time taken (s)", meta.get("elapsed_s", "")), ("seed", report.config.seed), ("options", opt_text)]
    summary = [("layers analyzed", len(layers)), ("layers skipped", len(report.skipped_layers)),
               (f"over-trained (alpha < {OVER_TRAINED:g})", sum(r.warning == "over-trained" for r in layers)),
               (f"under-trained (alpha > {UNDER_TRAINED:g})", sum(r.warning == "under-trained" for r in layers)),
               ("failed fits / invalid layers", sum(r.status != "success" for r in layers))]
    summary += list(report.summary.items())
    sections = [
        pages.Section("run", "Run", pages.key_values(run)),
        pages.Section("summary", "Summary", pages.key_values(summary)),
        pages.Section("alpha", "Alpha per layer",
                      "<p class=\"note\">alpha near 2–6 is typical of well-trained layers; below 2 over-trained, "
                      "above 6 under-trained.</p>" + (alpha_chart_svg(layers) if layers else "<p>No layers analyzed.</p>")),
        pages.Section("layers", "Layers",
                      "<p class=\"note\">Click a column header to sort. Rows: "
                      "<span class=\"tag over\">over-trained</span> <span class=\"tag under\">under-trained</span> "
                      "<span class=\"tag trap\">correlation trap</span>; grey rows failed. The meaning of each "
                      "column: docs/columns.md.</p>" + layers_table(report)),
        pages.Section("traps", "Correlation traps", traps_section(report, pngs)),
    ]
    if pngs:
        sections.append(pages.Section("esd", "Log-log ESD per layer", _esd_figures(report, pngs)))
    skipped = (pages.declared_table(SKIPPED, report.skipped_layers, ["layer_id", "name", "layer_type", "shape", "reason"])
               if report.skipped_layers else "<p>None: every weight matrix was analyzed.</p>")
    sections.append(pages.Section("skipped", "Skipped layers", skipped))
    return pages.page("htsr report", source, sections, verdict=verdict_block(report) + no_figures)
