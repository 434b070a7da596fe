"""One self-contained HTML report of a :class:`~htsr.report.Report`.

The page needs nothing from the network: styles and the small table-sorting script are inline,
the alpha chart is inline SVG and figures are PNG ``data:`` URIs. Every string that can come from the
model file (layer names, source path, reasons, trap entries) goes through :func:`html.escape`.

Sections: run metadata, summary, alpha per layer (with the α = 2 and α = 6 bands), the per-layer
table (click a header to sort; over-/under-trained, failed and trapped rows highlighted),
correlation traps (each trapped layer's original-vs-randomized figure and the matrix entries
responsible), per-layer log-log ESD figures (drawn once: those the plots drew are reused) and the skipped
layers with their reasons.
"""

from __future__ import annotations

import base64
import json
import math
from html import escape
from typing import Any, Iterable

from .files import is_missing as _missing

TABLE_COLUMNS = ("layer_id", "name", "layer_type", "N", "M", "num_evals", "alpha", "D", "xmin",
                 "num_pl_spikes", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank", "entropy",
                 "num_spikes", "mp_softrank", "sigma_mp", "num_traps", "rand_num_spikes", "ww_softrank",
                 "rand_distance", "warning", "status", "reason")

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1280px;
padding:1em 2em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
td.s,th.s{text-align:left}th{background:#f3f3f3;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:' \\2195';color:#aaa}
tr.over td{background:#fde2e2}tr.under td{background:#fff3cd}tr.failed td{background:#e9e9e9;color:#666}
tr.trap td.s:first-of-type,tr.trap td:nth-child(2){font-weight:bold;color:#b00020}
.tag{display:inline-block;padding:0 .4em;border-radius:.3em;font-size:.85em}
.tag.over{background:#f8b4b4}.tag.under{background:#ffe08a}.tag.trap{background:#b00020;color:#fff}
.meta td{text-align:left;white-space:normal;max-width:60em;word-break:break-word}.note{color:#555}
.scroll{overflow-x:auto;max-height:70vh;overflow-y:auto}
figure{margin:.6em 0}figure img{max-width:100%;border:1px solid #eee}
details{margin:.3em 0}summary{cursor:pointer}
.legend span{margin-right:1.2em}
"""

_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var heads = table.querySelectorAll('thead th');
  heads.forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-dir') !== 'asc';
      heads.forEach(function (h) { h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', asc ? 'asc' : 'desc');
      function key(row) {
        var cell = row.cells[col];
        var v = cell.getAttribute('data-v');
        if (v !== null) { return v === '' ? NaN : parseFloat(v); }
        return cell.textContent;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x === 'number' && typeof y === 'number') {
          if (isNaN(x) && isNaN(y)) { return 0; }
          if (isNaN(x)) { return 1; }
          if (isNaN(y)) { return -1; }
          return asc ? x - y : y - x;
        }
        return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _fmt(v: Any) -> str:
    if _missing(v):
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return f"{v:.1f}" if abs(v) < 1e4 else f"{v:.6g}"
        return f"{v:.4g}" if (abs(v) >= 1e4 or abs(v) < 1e-3) else f"{v:.4f}".rstrip("0").rstrip(".")
    try:
        import numpy as np

        if isinstance(v, np.floating):
            return _fmt(float(v))
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], sortable: bool = False, cls: str = "") -> str:
    headers = list(headers)
    out = [f'<table class="{"sortable " if sortable else ""}{cls}"><thead><tr>']
    out += [f'<th class="s">{_e(h)}</th>' for h in headers]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="s">{_e(_fmt(v))}</td>' for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _numeric(v: Any) -> float | None:
    if _missing(v) or isinstance(v, (str, bool)):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _opt_int(v: Any) -> int | None:
    return None if _missing(v) else int(v)


def _records(frame) -> list[dict]:
    return [] if frame is None or len(frame) == 0 else frame.to_dict(orient="records")


def _trapped_keys(report) -> set:
    keys = set()
    for t in _records(report.traps):
        sid = t.get("slice_id")
        keys.add((int(t["layer_id"]), _opt_int(sid)))
    return keys


def _row_key(row: dict) -> tuple:
    sid = row.get("slice_id")
    return int(row["layer_id"]), _opt_int(sid)


def _layer_table(report, rows: list[dict], trapped: set) -> str:
    cols = [c for c in TABLE_COLUMNS if c in report.details.columns]
    if "slice_id" in report.details.columns:
        cols.insert(2, "slice_id")
    out = ['<div class="scroll"><table class="sortable" id="layers"><thead><tr>']
    out += [f'<th class="{"s" if c in ("name", "layer_type", "warning", "status", "reason") else ""}">{_e(c)}</th>'
            for c in cols]
    out.append("</tr></thead><tbody>")
    for row in rows:
        classes = []
        if row.get("warning") == "over-trained":
            classes.append("over")
        elif row.get("warning") == "under-trained":
            classes.append("under")
        if row.get("status") not in (None, "", "success"):
            classes.append("failed")
        traps = _numeric(row.get("num_traps"))
        if _row_key(row) in trapped or (traps is not None and traps > 0):
            classes.append("trap")
        cells = []
        for c in cols:
            v = row.get(c)
            num = _numeric(v)
            text = _e(_fmt(v))
            if c == "warning" and v:
                text = f'<span class="tag {"over" if v == "over-trained" else "under"}">{text}</span>'
            if c == "num_traps" and num:
                text = f'<span class="tag trap">{text}</span>'
            if num is not None:
                cells.append(f'<td data-v="{num!r}">{text}</td>')
            elif c in ("layer_id", "N", "M", "num_evals", "alpha", "D", "xmin"):
                cells.append(f'<td data-v="">{text}</td>')
            else:
                cells.append(f'<td class="s">{text}</td>')
        out.append(f'<tr class="{" ".join(classes)}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def alpha_chart_svg(rows: list[dict], width: int = 1200, height: int = 320) -> str:
    """Inline SVG: alpha of each layer (in table order) with the α < 2 and α > 6 bands shaded."""
    alphas = [_numeric(r.get("alpha")) for r in rows]
    finite = [a for a in alphas if a is not None and math.isfinite(a)]
    top = max(8.0, min(max(finite, default=8.0), 20.0)) * 1.05
    left, right, pad_top, bottom = 48, 12, 12, 36
    pw, ph = width - left - right, height - pad_top - bottom
    n = max(len(rows), 1)

    def y(a: float) -> float:
        return pad_top + ph * (1 - min(max(a, 0.0), top) / top)

    def x(i: int) -> float:
        return left + pw * (i + 0.5) / n

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="alpha per layer" '
             f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px">',
             f'<rect x="{left}" y="{y(2):.1f}" width="{pw}" height="{y(0) - y(2):.1f}" fill="#fde2e2"/>',
             f'<rect x="{left}" y="{pad_top}" width="{pw}" height="{y(6) - pad_top:.1f}" fill="#fff3cd"/>']
    step = 2 if top <= 12 else 4
    for t in range(0, int(top) + 1, step):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{y(t) + 4:.1f}" font-size="11" text-anchor="end">{t}</text>')
    for level, colour in ((2, "#c0392b"), (6, "#b7950b")):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(level):.1f}" y2="{y(level):.1f}" '
                     f'stroke="{colour}" stroke-dasharray="5,4"/>')
    parts.append(f'<text x="{left + 6}" y="{y(2) + 14:.1f}" font-size="11" fill="#c0392b">'
                 'α &lt; 2: over-trained</text>'
                 f'<text x="{left + 6}" y="{pad_top + 14}" font-size="11" fill="#8a6d00">'
                 'α &gt; 6: under-trained</text>')
    pts = []
    for i, a in enumerate(alphas):
        if a is None or not math.isfinite(a):
            continue
        pts.append(f"{x(i):.1f},{y(a):.1f}")
    if len(pts) > 1:
        parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="#7f8c8d" stroke-width="1"/>')
    for i, (r, a) in enumerate(zip(rows, alphas)):
        if a is None or not math.isfinite(a):
            continue
        colour = "#c0392b" if a < 2 else "#d4a017" if a > 6 else "#2c7fb8"
        tip = _e(f"layer {r.get('layer_id')} {r.get('name', '')}: alpha = {a:.3f}")
        shape = (f'<circle cx="{x(i):.1f}" cy="{y(a):.1f}" r="4" fill="{colour}">' if a <= top else
                 f'<path d="M{x(i) - 5:.1f},{pad_top + 8} L{x(i):.1f},{pad_top} L{x(i) + 5:.1f},{pad_top + 8} Z" '
                 f'fill="{colour}">')
        parts.append(shape + f"<title>{tip}</title>" + ("</circle>" if a <= top else "</path>"))
    if len(rows) <= 80:
        for i, r in enumerate(rows):
            parts.append(f'<text x="{x(i):.1f}" y="{pad_top + ph + 12}" font-size="9" text-anchor="middle" '
                         f'fill="#555">{_e(r.get("layer_id"))}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{pad_top}" y2="{pad_top + ph}" stroke="#333"/>'
                 f'<line x1="{left}" x2="{left + pw}" y1="{pad_top + ph}" y2="{pad_top + ph}" stroke="#333"/>'
                 f'<text x="{left + pw / 2:.0f}" y="{height - 6}" font-size="12" text-anchor="middle">'
                 f'layer id, in table order (hover a point for its name; ▲ = alpha above {top:.0f})</text>'
                 f'<text x="14" y="{pad_top + ph / 2:.0f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {pad_top + ph / 2:.0f})">alpha</text></svg>')
    return "".join(parts)


def _entries(value: Any) -> str:
    if value is None or isinstance(value, float) and value != value:
        return ""
    if isinstance(value, str):
        return _e(value)
    try:
        items = list(value)
    except TypeError:
        return _e(value)
    shown = []
    for item in items[:20]:
        if isinstance(item, dict):
            shown.append(", ".join(f"{_e(k)}={_e(_fmt(v))}" for k, v in item.items()))
        elif isinstance(item, (list, tuple)) and len(item) == 3:
            r, c, v = item
            shown.append(f"W[{_e(r)}, {_e(c)}] = {_e(_fmt(v))}")
        else:
            shown.append(_e(item))
    more = f"<li>… {len(items) - 20} more</li>" if len(items) > 20 else ""
    return "<ul>" + "".join(f"<li>{s}</li>" for s in shown) + more + "</ul>"


def _kind_text(trap: dict) -> str:
    kind = trap.get("kind")
    if kind == "shared_dim" and not _missing(trap.get("shared_index")):
        return f"outlier dimension {int(trap['shared_index'])}"
    return "" if _missing(kind) else str(kind)


def _trap_groups_section(report, traps: list[dict]) -> str:
    """The outlier dimensions (one index shared by the traps of several layers), before the layers' traps."""
    groups = _records(getattr(report, "trap_groups", None))
    if not groups:
        if traps and "kind" in traps[0]:
            return "<p>No outlier dimension: no index is shared by the traps of two or more layers.</p>"
        return ""
    shared = sum(1 for t in traps if t.get("kind") == "shared_dim")
    intro = (f"<p>{len(groups)} outlier dimension(s) hold {shared} of the {len(traps)} trap(s): one index of "
             "axes of the same length (a neuron, channel or residual-stream coordinate) carries a large element "
             "in several layers. That is one structure of the model seen in each of those layers, not a sign that "
             "each of them is over-trained on its own; the isolated traps below are private to their layer.</p>")
    out = ['<section class="trap-groups"><h3>Outlier dimensions</h3>', intro, "<ul>"]
    for g in groups:
        out.append(f"<li><b>outlier dimension {_e(g['index'])}: {_e(g['num_layers'])} layers, "
                   f"max |w| {_e(format(float(g['max_value']), '.3g'))}</b> ({_e(g['num_traps'])} traps; "
                   f"{_e(g['axis'])} of length {_e(g['size'])}; expected by chance "
                   f"{_e(format(float(g['chance']), '.2g'))})<br><span class=\"note\">"
                   + ", ".join(f"{_e(name)} ({_e(axis)})" for name, axis in zip(g["layers"], g["axes"]))
                   + "</span></li>")
    out.append("</ul></section>")
    return "".join(out)


def _traps_section(report, rows: list[dict], pngs: dict | None) -> str:
    options = report.meta.get("options", {}) if report.meta else {}
    if not options.get("randomize") and "num_traps" not in report.details.columns:
        return '<p class="note">Correlation traps are looked for with <code>randomize=True</code> ' \
               '(<code>htsr analyze --randomize</code>); this run did not randomize.</p>'
    traps = _records(report.traps)
    if not traps:
        return "<p>No correlation traps found.</p>"
    by_row = {_row_key(r): r for r in rows}
    results = {r.key: r for r in report.layers}
    groups: dict[tuple, list[dict]] = {}
    for t in traps:
        sid = t.get("slice_id")
        groups.setdefault((int(t["layer_id"]), _opt_int(sid)), []).append(t)
    out = [f"<p>{len(traps)} correlation trap(s) in {len(groups)} layer(s): randomized eigenvalues right of the "
           "randomized Marchenko–Pastur bulk that the shuffle did not destroy.</p>"]
    out.append(_trap_groups_section(report, traps))
    isolated = {k for k, items in groups.items() if any(t.get("kind", "isolated") == "isolated" for t in items)}
    if isolated and len(isolated) < len(groups):
        out.append("<p>Layers with isolated traps first, then the layers whose traps all lie on an outlier "
                   "dimension.</p>")
    for key, items in sorted(groups.items(), key=lambda kv: kv[0] not in isolated):
        row = by_row.get(key, {})
        first = items[0]
        title = f"layer {key[0]}" + (f" slice {key[1]}" if key[1] is not None else "") + f": {first.get('name', '')}"
        out.append(f'<section class="trap-layer"><h3>{_e(title)}</h3>')
        if first.get("longname") and first.get("longname") != first.get("name"):
            out.append(f'<p class="note">{_e(first.get("longname"))}</p>')
        png = None
        result = results.get(key)
        if pngs is not None and result is not None:
            png = dict(pngs.get(key, [])).get("randesd")
        if png:
            out.append(f"<figure>{_img(png, 'original vs randomized ESD of ' + title)}"
                       "<figcaption>Original ESD (green), randomized (red), largest randomized eigenvalue "
                       "(orange).</figcaption></figure>")
        else:
            out.append('<p class="note">(Figure not available: it needs the layer\'s randomized ESD and '
                       'matplotlib, <code>pip install \'htsr[plot]\'</code>.)</p>')
        out.append('<table><thead><tr><th>trap eigenvalue</th><th>bulk edge</th><th>ratio</th>'
                   '<th class="s">kind</th><th class="s">entries responsible (row, column, value)</th></tr></thead><tbody>')
        for t in items:
            out.append(f"<tr><td>{_e(_fmt(t.get('trap_eval')))}</td><td>{_e(_fmt(t.get('bulk_max')))}</td>"
                       f"<td>{_e(_fmt(t.get('ratio')))}</td><td class=\"s\">{_e(_kind_text(t))}</td>"
                       f"<td class=\"s\">{_entries(t.get('entries'))}</td></tr>")
        out.append("</tbody></table>")
        if row and "max_rand_eval" in row:
            out.append(f'<p class="note">max randomized eigenvalue {_e(_fmt(row.get("max_rand_eval")))}, '
                       f'largest original eigenvalue {_e(_fmt(row.get("lambda_max")))}.</p>')
        out.append("</section>")
    return "".join(out)


def _esd_figures(report, pngs: dict) -> str:
    out = []
    for result in report.layers:
        png = dict(pngs.get(result.key, [])).get("esd")
        if png is None:
            continue
        label = f"layer {result.layer_id}" + (f" slice {result.slice_id}" if result.slice_id is not None else "") \
            + f": {result.name}"
        alpha = _fmt(result.fit.alpha if result.fit is not None else None)
        out.append(f"<details><summary>{_e(label)} (alpha {_e(alpha or 'n/a')})</summary>"
                   f"<figure>{_img(png, 'log-log ESD of ' + label)}</figure></details>")
    return "".join(out)


def render_report(report, figures: bool = True) -> str:
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
    from .verdict import verdict_html

    pngs, no_figures = None, False
    if figures:
        try:
            import matplotlib  # noqa: F401
        except ImportError:  # the page is still complete, just without figures, and says so
            figures = False
            no_figures = True
        else:
            from .plotting import render_pngs
            from .progress import Progress

            kinds = ("esd", "randesd")
            todo = sum(r.esd is not None and any((r.key, k) not in report.pngs for k in kinds) for r in report.layers)
            with Progress(todo, (report.meta or {}).get("options", {}).get("progress"), desc="htsr report",
                          unit="layer") as bar:
                pngs = render_pngs(report, kinds=kinds, on_layer=bar.update)
    meta = report.meta or {}
    details = report.details
    rows = _records(details)
    trapped = _trapped_keys(report)
    source = meta.get("source", "")
    warn = details["warning"].value_counts().to_dict() if "warning" in details.columns else {}
    failed = int((details["status"] != "success").sum()) if "status" in details.columns else 0
    options = meta.get("options", {})
    opt_text = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in sorted(options.items()))
    meta_rows = [("htsr version", meta.get("htsr_version", "")), ("source", source), ("date", meta.get("date", "")),
                 ("time taken (s)", meta.get("elapsed_s", "")), ("seed", meta.get("seed", "")), ("options", opt_text)]
    summary_rows = [("layers analyzed", len(details)), ("layers skipped", len(report.skipped)),
                    ("over-trained (alpha < 2)", int(warn.get("over-trained", 0))),
                    ("under-trained (alpha > 6)", int(warn.get("under-trained", 0))),
                    ("failed fits / invalid layers", failed)]
    summary_rows += [(k, v) for k, v in (report.summary or {}).items()]
    skipped = _records(report.skipped)
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>htsr report: {_e(source)}</title><style>{_CSS}</style></head><body>",
        f"<h1>htsr report</h1><p class=\"note\">{_e(source)}</p>",
        verdict_html(report),
        "<p class=\"note\"><b>No figures:</b> matplotlib is not installed (<code>pip install 'htsr[plot]'</code>)."
        "</p>" if no_figures else "",
        "<h2 id=\"run\">Run</h2><table class=\"meta\"><tbody>",
        "".join(f"<tr><th class=\"s\">{_e(k)}</th><td class=\"s\">{_e(_fmt(v))}</td></tr>" for k, v in meta_rows),
        "</tbody></table>",
        "<h2 id=\"summary\">Summary</h2><table class=\"meta\"><tbody>",
        "".join(f"<tr><th class=\"s\">{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in summary_rows),
        "</tbody></table>",
        "<h2 id=\"alpha\">Alpha per layer</h2>",
        "<p class=\"note\">alpha near 2–6 is typical of well-trained layers; below 2 over-trained, above 6 "
        "under-trained.</p>",
        alpha_chart_svg(rows) if rows else "<p>No layers analyzed.</p>",
        "<h2 id=\"layers\">Layers</h2><p class=\"note\">Click a column header to sort. Rows: "
        "<span class=\"tag over\">over-trained</span> <span class=\"tag under\">under-trained</span> "
        "<span class=\"tag trap\">correlation trap</span>; grey rows failed.</p>",
        _layer_table(report, rows, trapped),
        "<h2 id=\"traps\">Correlation traps</h2>",
        _traps_section(report, rows, pngs),
    ]
    if pngs:
        parts += ["<h2 id=\"esd\">Log-log ESD per layer</h2>", _esd_figures(report, pngs)]
    parts.append("<h2 id=\"skipped\">Skipped layers</h2>")
    if skipped:
        parts.append(_table(("layer_id", "name", "layer_type", "shape", "reason"),
                            [(s.get("layer_id"), s.get("name"), s.get("layer_type"), s.get("shape"), s.get("reason"))
                             for s in skipped], sortable=True))
    else:
        parts.append("<p>None: every weight matrix was analyzed.</p>")
    parts.append(f"<script>{_JS}</script></body></html>\n")
    return "".join(parts)
