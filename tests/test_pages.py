"""The one page builder: every page has the report's stylesheet; charts keep their labels off the points."""

from __future__ import annotations

import re

import numpy as np

import htsr
from htsr import pages
from htsr.compare import comparison, render_html
from htsr.monitor_views import render_html as monitor_html


def _texts_and_points(svg: str) -> tuple[list[float], list[float], float]:
    texts = [float(y) for y in re.findall(r'<text x="[^"]+" y="([0-9.]+)"', svg)]
    points = [float(y) for y in re.findall(r'<circle cx="[^"]+" cy="([0-9.]+)"', svg)]
    top = float(re.search(r'<line x1="\d+" x2="\d+" y1="([0-9.]+)" y2="[0-9.]+" stroke="#333"/>', svg).group(1))
    return texts, points, top


def test_chart_legend_sits_above_the_plotted_area():
    # a point below alpha = 2 (where the old chart wrote its "α < 2" label) and one far above 6
    series = pages.Series("", [1.5, 3.0, 7.5, 25.0], point_colours=[pages.alpha_colour(a) for a in (1.5, 3, 7.5, 25)])
    svg = pages.chart([series], pages.Chart("layer", "alpha", ["1", "2", "3", "4"], pages.ALPHA_BANDS, y_max=8.0))
    texts, points, top = _texts_and_points(svg)
    legend = [y for y, t in zip(texts, re.findall(r"<text [^>]*>([^<]*)</text>", svg)) if "trained" in t]
    assert len(legend) == 2 and all(y < top for y in legend)  # the band labels are above the plot
    assert all(p >= top for p in points)  # every point is inside it
    assert svg.count("<path") == 1  # alpha 25 is drawn as ▲ at the top edge
    assert 'fill="#c0392b"' in svg and 'fill="#d4a017"' in svg


def test_compare_and_monitor_pages_share_the_report_look():
    rng = np.random.default_rng(0)
    a = {"fc.weight": rng.standard_normal((100, 40)), "out.weight": rng.standard_normal((80, 30))}
    b = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in a.items()}
    report_page = htsr.analyze(a).to_html()
    compare_page = render_html(comparison(a, b))
    m = htsr.Monitor(every=1)
    for step in (0, 5, 10):
        m.step({k: v * (1 + step / 10) for k, v in a.items()}, step)
    monitor_page = m.to_html()
    for page in (report_page, compare_page, monitor_page):
        assert pages.CSS in page and page.count("<style>") == 1
    assert '<table id="layer-table" class="sortable">' in compare_page and "<h2 id=\"alpha\">" in compare_page
    # the Monitor: integer steps on the axis, traps never drawn as a flat line when there are none
    ticks = re.findall(r'font-size="9" text-anchor="middle" fill="#555">([^<]*)</text>', monitor_page)
    assert ticks[:3] == ["0", "5", "10"]
    assert [r["num_traps"] for r in m.history] == [0, 0, 0]  # Gaussian weights: no trap
    section = monitor_page[monitor_page.index('id="traps"'):monitor_page.index('id="flags"')]
    assert "<svg" not in section and "No correlation trap at any step." in section
