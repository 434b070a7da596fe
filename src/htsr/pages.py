"""The one page builder of htsr's HTML: the report, ``htsr compare`` and the Monitor page.

One stylesheet (:data:`CSS`), one sortable-table script, one page shell
(:func:`page`: a title, an optional verdict block at the top, sections), one
table renderer (:func:`table`, and :func:`declared_table` for a declared
:class:`~htsr.tables.Table`) and one chart helper (:func:`chart`: points and
lines over integer positions, with shaded bands and labelled reference lines
whose labels sit outside the plotted area). Pages are self-contained: nothing
is fetched from the network, and every string that can come from a model file
goes through :func:`esc`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

from .files import is_missing
from .spectral.powerlaw import OVER_TRAINED, UNDER_TRAINED

if TYPE_CHECKING:
    from .results import LayerResult

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1360px;
padding:1em 1.5em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1.05em;margin:1em 0 .3em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .35em;text-align:right;white-space:nowrap}
td.s,th.s{text-align:left}th{background:#f3f3f3;position:sticky;top:0;z-index:2;white-space:normal;
vertical-align:bottom}
td.w{white-space:normal;min-width:6em;max-width:28em}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:'\\2195';color:#bbb;font-size:.8em;margin-left:.15em}
table.wide td:first-child,table.wide th:first-child{position:sticky;left:0;background:#fff;z-index:1;
max-width:22em;overflow:hidden;text-overflow:ellipsis;box-shadow:1px 0 0 #ccc}
table.wide th:first-child{background:#f3f3f3;z-index:3}
table.wide .x{display:none}.allcols:checked~.scroll table.wide .x{display:table-cell}
.toggle{font-size:.85em;margin:.3em 0}.toggle label{cursor:pointer;user-select:none}
tr.over td{background:#fde2e2}tr.under td{background:#fff3cd}tr.failed td{background:#e9e9e9;color:#666}
tr.trap td:first-child{font-weight:bold;color:#b00020}
.tag{display:inline-block;padding:0 .4em;border-radius:.3em;font-size:.85em}
.tag.over{background:#f8b4b4}.tag.under{background:#ffe08a}.tag.trap{background:#b00020;color:#fff}
.meta td{text-align:left;white-space:normal;max-width:60em;word-break:break-word}.note{color:#555}
.scroll{overflow-x:auto;max-height:75vh;overflow-y:auto}
figure{margin:.6em 0}figure img{max-width:100%;border:1px solid #eee}
details{margin:.3em 0}summary{cursor:pointer}
section.verdict{border:1px solid #ccc;border-radius:.4em;padding:.2em 1em;background:#fafafa}
svg text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
"""

SORT_JS = """
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


class Markup(str):
    """A string that is already HTML (not escaped again by :func:`table`)."""


def esc(value: Any) -> str:
    """``value`` as HTML-escaped text (None → '')."""
    return escape("" if value is None else str(value), quote=True)


def fmt(v: Any) -> str:
    """A cell's text: integers as they are, floats to about four significant digits, missing as ''."""
    if is_missing(v):
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        v = float(v)
        if math.isinf(v):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return f"{v:.1f}" if abs(v) < 1e4 else f"{v:.6g}"
        return f"{v:.4g}" if (abs(v) >= 1e4 or abs(v) < 1e-3) else f"{v:.4f}".rstrip("0").rstrip(".")
    if isinstance(v, tuple):
        return "(" + ", ".join(str(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


def number(v: Any) -> float | None:
    """``v`` as a float for sorting and charts (None for text, booleans and missing values)."""
    if is_missing(v) or isinstance(v, (str, bool, tuple, list)):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def img(png: bytes, alt: str) -> str:
    """An inline ``<img>`` of PNG bytes."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{esc(alt)}">'


def _cell(v: Any, wrap: bool = False, extra: str = "") -> str:
    num = number(v)
    text = v if isinstance(v, Markup) else esc(fmt(v))
    cls = " ".join(c for c in (extra, "" if num is not None else "s", "w" if wrap else "") if c)
    attr = f' class="{cls}"' if cls else ""
    if num is not None:
        return f'<td{attr} data-v="{num!r}">{text}</td>'
    return f"<td{attr}>{text}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, sortable: bool = False, table_id: str = "",
          cls: str = "", row_classes: Sequence[str] | None = None, hidden: Iterable[int] = (),
          wrap: Iterable[int] = (), text_columns: Iterable[int] = ()) -> str:
    """One HTML table: a header row and the rows' values (numbers right-aligned and sortable as numbers).

    ``hidden``: column positions shown only with "all columns" ticked (class ``x``); ``wrap``: positions
    of long-text columns; ``text_columns``: positions whose header is left-aligned. A :class:`Markup`
    value is inserted as HTML, anything else escaped.
    """
    hide, wide, texts = set(hidden), set(wrap), set(text_columns)
    classes = " ".join(c for c in ("sortable" if sortable else "", cls, "wide" if hide else "") if c)
    out = [f"<table{f' id={chr(34)}{esc(table_id)}{chr(34)}' if table_id else ''}"
           f"{f' class={chr(34)}{classes}{chr(34)}' if classes else ''}><thead><tr>"]
    for i, h in enumerate(headers):
        c = " ".join(x for x in ("s" if i in texts else "", "x" if i in hide else "") if x)
        out.append(f"<th{f' class={chr(34)}{c}{chr(34)}' if c else ''}>{esc(h).replace('_', '_<wbr>')}</th>")
    out.append("</tr></thead><tbody>")
    for n, row in enumerate(rows):
        rc = row_classes[n] if row_classes is not None else ""
        out.append(f'<tr class="{rc}">' if row_classes is not None else "<tr>")
        out += [_cell(v, i in wide, "x" if i in hide else "") for i, v in enumerate(row)]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def declared_table(decl: Any, rows: Sequence[Any], names: Sequence[str] | None = None, *,
                   short: Sequence[str] | None = None, sortable: bool = True, table_id: str = "",
                   row_classes: Sequence[str] | None = None, markup: dict[str, Any] | None = None) -> str:
    """A declared :class:`~htsr.tables.Table` of typed ``rows``: the columns ``names`` (default: all).

    With ``short``, only those columns show at first and a tick box shows every column (the first
    column stays in view while scrolling sideways). ``markup`` maps a column to a function
    ``value -> Markup`` (tags, lists).
    """
    names = list(decl.names if names is None else names)
    cells = decl.cells(rows, names)
    if markup:
        cells = [[markup[n](v) if n in markup and v not in (None, "") else v for n, v in zip(names, row)]
                 for row in cells]
    texts = [i for i, n in enumerate(names) if decl[n].dtype in ("str", "object")]
    wrap = [i for i, n in enumerate(names) if n in ("reason", "entries", "layers")]
    hidden = [] if short is None else [i for i, n in enumerate(names) if n not in short]
    body = table(names, cells, sortable=sortable, table_id=table_id, row_classes=row_classes, hidden=hidden,
                 wrap=wrap, text_columns=texts)
    body = f'<div class="scroll">{body}</div>'
    if hidden:
        tick = f"allcols-{esc(table_id) or 'table'}"
        body = (f'<input type="checkbox" class="allcols" id="{tick}" hidden><p class="toggle">'
                f'<label for="{tick}">&#9656; all {len(names)} columns / the short set of {len(names) - len(hidden)} '
                f"(click to switch)</label></p>{body}")
    return body


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of labels and values (run metadata, a summary)."""
    rows = "".join(f'<tr><th class="s">{esc(k)}</th><td class="s">{esc(fmt(v))}</td></tr>' for k, v in pairs)
    return f'<table class="meta"><tbody>{rows}</tbody></table>'


@dataclass(frozen=True)
class Section:
    """One ``<h2>`` section of a page (``html`` is already HTML)."""

    id: str
    title: str
    html: str


def page(title: str, subtitle: str, sections: Sequence[Section], verdict: str = "") -> str:
    """A whole self-contained page: ``<h1>`` title, subtitle, the verdict block (when given), the sections."""
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             f"<title>{esc(title)}{': ' + esc(subtitle) if subtitle else ''}</title><style>{CSS}</style></head>"
             f"<body><h1>{esc(title)}</h1>"]
    if subtitle:
        parts.append(f'<p class="note">{esc(subtitle)}</p>')
    if verdict:
        parts.append(f'<section class="verdict" id="verdict">{verdict}</section>')
    for s in sections:
        parts.append(f'<h2 id="{esc(s.id)}">{esc(s.title)}</h2>{s.html}')
    parts.append(f"<script>{SORT_JS}</script></body></html>\n")
    return "".join(parts)


# ------------------------------------------------------------------------------------------- the chart


@dataclass(frozen=True)
class Series:
    """One series of a :func:`chart`: a value (or None) per x position."""

    name: str
    values: Sequence[float | None]
    colour: str = "#2c7fb8"
    line: bool = True
    points: bool = True
    tips: Sequence[str] | None = None
    point_colours: Sequence[str] | None = None


@dataclass(frozen=True)
class Band:
    """A shaded horizontal band from ``low`` to ``high`` (None: the plot's edge), labelled in the legend."""

    low: float | None
    high: float | None
    colour: str
    label: str
    line_colour: str = ""


@dataclass(frozen=True)
class Chart:
    """What :func:`chart` draws besides the series."""

    x_label: str
    y_label: str
    x_ticks: Sequence[str] = ()
    bands: Sequence[Band] = field(default_factory=tuple)
    y_min: float = 0.0
    y_max: float | None = None
    y_cap: float | None = None
    width: int = 1200
    height: int = 320


def _ticks(lo: float, hi: float) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / 6
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def chart(series: Sequence[Series], spec: Chart) -> str:
    """An inline SVG chart of ``series`` over x positions 0, 1, … (integers: layers or steps).

    The legend (series and bands) is drawn above the plotted area, so no label can cover a point;
    values above ``spec.y_cap`` are drawn as ▲ at the top edge.
    """
    n = max((len(s.values) for s in series), default=0)
    finite = [float(v) for s in series for v in s.values if v is not None and math.isfinite(v)]
    top = spec.y_max if spec.y_max is not None else max(finite, default=1.0)
    if spec.y_cap is not None:
        top = min(top, spec.y_cap)
    bottom = min([spec.y_min, *finite])
    if top <= bottom:
        top = bottom + 1.0
    top += (top - bottom) * 0.05
    width, height = spec.width, spec.height
    left, right, pad_top, pad_bottom = 56, 16, 30, 40
    pw, ph = width - left - right, height - pad_top - pad_bottom

    def y(v: float) -> float:
        return pad_top + ph * (1 - (min(max(v, bottom), top) - bottom) / (top - bottom))

    def x(i: int) -> float:
        return left + pw * (i + 0.5) / max(n, 1)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(spec.y_label)}" '
           f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px">']
    for b in spec.bands:
        y1, y2 = y(b.high) if b.high is not None else pad_top, y(b.low) if b.low is not None else pad_top + ph
        out.append(f'<rect x="{left}" y="{y1:.1f}" width="{pw}" height="{max(y2 - y1, 0):.1f}" fill="{b.colour}"/>')
    for t in _ticks(bottom, top):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 6}" y="{y(t) + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>')
    for b in spec.bands:
        for edge in (b.low, b.high):
            if edge is not None and b.line_colour and bottom < edge < top:
                out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(edge):.1f}" y2="{y(edge):.1f}" '
                           f'stroke="{b.line_colour}" stroke-dasharray="5,4"/>')
    for s in series:
        pts = [(i, float(v)) for i, v in enumerate(s.values) if v is not None and math.isfinite(v)]
        if s.line and len(pts) > 1:
            out.append(f'<polyline points="{" ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in pts)}" fill="none" '
                       f'stroke="{s.colour}" stroke-width="1.2"/>')
        if not s.points:
            continue
        for i, v in pts:
            colour = s.point_colours[i] if s.point_colours is not None else s.colour
            tip = f"<title>{esc(s.tips[i])}</title>" if s.tips is not None else ""
            if v > top:
                out.append(f'<path d="M{x(i) - 5:.1f},{pad_top + 8} L{x(i):.1f},{pad_top} L{x(i) + 5:.1f},'
                           f'{pad_top + 8} Z" fill="{colour}">{tip}</path>')
            else:
                out.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}">{tip}</circle>')
    if spec.x_ticks:
        every = max(1, math.ceil(len(spec.x_ticks) / 60))
        for i, label in enumerate(spec.x_ticks):
            if i % every == 0:
                out.append(f'<text x="{x(i):.1f}" y="{pad_top + ph + 13}" font-size="9" text-anchor="middle" '
                           f'fill="#555">{esc(label)}</text>')
    # the legend, above the plotted area: series, then bands
    lx = float(left)
    items = [(s.colour, s.name, "line" if s.line else "dot") for s in series if s.name]
    items += [(b.line_colour or b.colour, b.label, "band") for b in spec.bands]
    for colour, label, kind in items:
        mark = (f'<rect x="{lx:.0f}" y="8" width="12" height="10" fill="{colour}"/>' if kind == "band" else
                f'<line x1="{lx:.0f}" x2="{lx + 12:.0f}" y1="13" y2="13" stroke="{colour}" stroke-width="2"/>'
                if kind == "line" else f'<circle cx="{lx + 6:.0f}" cy="13" r="4" fill="{colour}"/>')
        out.append(f'{mark}<text x="{lx + 16:.0f}" y="17" font-size="11">{esc(label)}</text>')
        lx += 16 + 6.0 * len(label) + 16
    out.append(f'<line x1="{left}" x2="{left}" y1="{pad_top}" y2="{pad_top + ph}" stroke="#333"/>'
               f'<line x1="{left}" x2="{left + pw}" y1="{pad_top + ph}" y2="{pad_top + ph}" stroke="#333"/>'
               f'<text x="{left + pw / 2:.0f}" y="{height - 6}" font-size="12" text-anchor="middle">'
               f'{esc(spec.x_label)}</text>'
               f'<text x="14" y="{pad_top + ph / 2:.0f}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 14 {pad_top + ph / 2:.0f})">{esc(spec.y_label)}</text></svg>')
    return "".join(out)


ALPHA_BANDS = (Band(None, OVER_TRAINED, "#fde2e2", f"α < {OVER_TRAINED:g}: over-trained", "#c0392b"),
               Band(UNDER_TRAINED, None, "#fff3cd", f"α > {UNDER_TRAINED:g}: under-trained", "#b7950b"))


def alpha_colour(a: float) -> str:
    """The colour of an alpha point: red below 2, amber above 6, blue between."""
    return "#c0392b" if a < OVER_TRAINED else "#d4a017" if a > UNDER_TRAINED else "#2c7fb8"


def alpha_chart_svg(layers: tuple[LayerResult, ...] | list[LayerResult], width: int = 1200, height: int = 320) -> str:
    """Inline SVG: alpha of each layer (in table order) with the over- and under-trained alpha bands shaded."""
    alphas = [None if r.fit is None else float(r.fit.alpha) for r in layers]
    finite = [a for a in alphas if a is not None and math.isfinite(a)]
    top = max(8.0, min(max(finite, default=8.0), 20.0))
    tips = [f"layer {r.layer_id} {r.name}: alpha = {a:.3f}" if a is not None else "" for r, a in zip(layers, alphas)]
    colours = [alpha_colour(a) if a is not None and math.isfinite(a) else "#999" for a in alphas]
    series = Series("", alphas, colour="#7f8c8d", tips=tips, point_colours=colours)
    spec = Chart(x_label=f"layer id, in table order (hover a point for its name; ▲ = alpha above {top * 1.05:.0f})",
                 y_label="alpha", x_ticks=[str(r.layer_id) for r in layers] if len(layers) <= 80 else (),
                 bands=ALPHA_BANDS, y_max=top, width=width, height=height)
    return chart([series], spec)
