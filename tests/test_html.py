"""The self-contained HTML report: content, escaping, no network, and a real headless-Chromium render."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import re
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.html import alpha_chart_svg, render_report

pytest.importorskip("matplotlib")

EVIL = '<script>alert("x")</script>&"\'<b>'


class Page(HTMLParser):
    """Collects tags, attributes, scripts and text of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)

    def all(self, tag):
        return [a for t, a in self.tags if t == tag]


def _model(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    trap = rng.standard_normal((256, 256)) / 16
    trap[10, 20] = 10.0
    return {
        f"{EVIL}.weight": rng.standard_normal((120, 60)),
        "heavy.weight": rng.standard_t(1.5, (200, 100)),
        "trap.weight": trap,
        "wide.weight": rng.standard_normal((400, 40)),
        "tiny.weight": rng.standard_normal((4, 3)),
    }


@pytest.fixture(scope="module")
def report():
    return htsr.analyze(_model(), randomize=True, mp_fit=True, keep_esd=True)


@pytest.fixture(scope="module")
def page(report, tmp_path_factory):
    path = tmp_path_factory.mktemp("html") / "report.html"
    assert report.to_html(path) is None
    return path


def test_sections_and_content(report, page):
    text = page.read_text(encoding="utf-8")
    doc = Page(text)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for heading in ("Run", "Summary", "Alpha per layer", "Layers", "Correlation traps", "Log-log ESD per layer",
                    "Skipped layers"):
        assert f">{heading}</h2>" in text
    body = " ".join(doc.text)
    assert htsr.__version__ in body and report.meta["source"] in body and report.meta["date"] in body
    assert f"{report.meta['elapsed_s']}" in body and "seed" in body
    # the per-layer table: one row per layer, sortable, highlighted rows
    table = text[text.index('<table id="layer-table" class="sortable wide">'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r'<tr class="([^"]*)">', table)
    assert len(rows) == len(report.details) == 4
    by_name = dict(zip(report.details["name"], rows))
    assert "over" in by_name["heavy"].split() and "under" in by_name["wide"].split()
    assert "trap" in by_name["trap"].split() and by_name["wide"].split() == ["under"]
    # alpha values as sortable numbers
    for a in report.details["alpha"]:
        assert f'data-v="{float(a)!r}"' in table
    # skipped layer with its reason
    assert "fewer than min_evals=10 eigenvalues (M·rf = 3)" in body
    # summary
    assert f"{report.summary['alpha']:.4f}".rstrip("0") in body


def test_alpha_chart_has_bands_and_one_point_per_layer(report):
    rows = report.details.to_dict(orient="records")
    svg = alpha_chart_svg(report.layers)
    doc = Page(svg)
    assert len(doc.all("circle")) + len(doc.all("path")) == len(rows)
    assert "α &lt; 2: over-trained" in svg and "α &gt; 6: under-trained" in svg
    dashed = [a for a in doc.all("line") if a.get("stroke-dasharray")]
    assert len(dashed) == 2
    # the 2 and 6 lines sit where the axis puts alpha = 2 and 6: y is linear in alpha
    y2, y6 = sorted(float(a["y1"]) for a in dashed)[::-1]
    ys = {r["name"]: float(a["cy"]) for r, a in zip([r for r in rows if r["alpha"] <= 20], doc.all("circle"))}
    for r in rows:
        if r["name"] in ys:
            expected = y2 + (r["alpha"] - 2) * (y6 - y2) / 4
            assert ys[r["name"]] == pytest.approx(expected, abs=0.11)


def test_self_contained(page):
    text = page.read_text(encoding="utf-8")
    doc = Page(text)
    assert not doc.all("link") and not any("src" in a for a in doc.all("script"))
    bare = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text).replace('xmlns="http://www.w3.org/2000/svg"', "")
    urls = re.findall(r"(?:https?:)?//[\w.-]+", bare)
    assert urls == []
    imgs = doc.all("img")
    assert len(imgs) >= 5  # one trap overlay + one log-log ESD per layer
    for img in imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fetch(" not in "".join(doc.scripts) and "XMLHttpRequest" not in "".join(doc.scripts)


def test_element_ids_are_unique(page):
    ids = [a["id"] for _, a in Page(page.read_text(encoding="utf-8")).tags if "id" in a]
    assert "layers" in ids and "layer-table" in ids  # the section's heading and its table
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_model_strings_are_escaped(page, tmp_path):
    text = page.read_text(encoding="utf-8")
    assert EVIL not in text and "<script>alert" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;&#x27;&lt;b&gt;" in text
    assert len(Page(text).all("script")) == 1  # only htsr's own sorting script
    # a file path from the user is escaped too (source metadata, title)
    from safetensors.numpy import save_file

    odd = tmp_path / "m<i>&x.safetensors"
    save_file({"fc.weight": np.random.default_rng(0).standard_normal((50, 20))}, str(odd))
    html = htsr.analyze(str(odd)).to_html()
    assert "m<i>&x" not in html and "m&lt;i&gt;&amp;x" in html


def test_trap_section_shows_figure_and_entries(report, page):
    text = page.read_text(encoding="utf-8")
    section = text[text.index('id="traps"'):text.index('id="esd"')]
    traps = report.traps
    assert set(traps["name"]) == {"trap", "heavy"}  # a planted element; Student-t(1.5) outliers
    assert section.count('<section class="trap-layer">') == 2
    assert section.count("<img ") == 2 and "original vs randomized ESD" in section
    planted = traps[traps["name"] == "trap"]
    trap_id = int(report.details.set_index("name").loc["trap", "layer_id"])
    assert f"<h3>layer {trap_id}: trap</h3>" in section
    entry = planted.iloc[0]["entries"][0]
    assert (entry[0], entry[1]) == (10, 20)
    assert f"W[10, 20] = {entry[2]:.1f}" in section
    for t in traps.itertuples():
        assert f">{t.trap_eval:.4f}".rstrip("0") + "</td>" in section or f">{t.trap_eval:.4g}</td>" in section


def test_report_without_randomize():
    rng = np.random.default_rng(5)
    report = htsr.analyze({"fc.weight": rng.standard_normal((80, 40))})
    html = render_report(report)
    assert "this run did not randomize" in html and html.count("<img") == 1 and 'id="esd"' in html
    assert "<img" not in render_report(report, figures=False)
    assert "None: every weight matrix was analyzed." in html
    # traps without their figure (no figures drawn): entries listed, figure explained
    W = rng.standard_normal((80, 40)) / 9
    W[4, 5] = 6.5
    trapped = htsr.analyze({"fc.weight": W}, randomize=True)
    assert [t.entries[0][:2] for t in trapped.trap_list] == [(4, 5)]
    html = render_report(trapped, figures=False)
    assert "W[4, 5] = 6.5" in html and "Figure not available" in html


def test_to_html_returns_text_without_path(report):
    text = report.to_html()
    assert isinstance(text, str) and text.startswith("<!DOCTYPE html>")


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@contextlib.contextmanager
def _chromium(*extra: str):
    """A headless Debian Chromium driver with a throwaway profile and the browser log kept."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory() as profile:
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    f"--user-data-dir={profile}", *extra):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(str(CHROMEDRIVER)) if CHROMEDRIVER.exists() else Service()
        driver = webdriver.Chrome(service=service, options=opts)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_renders_in_headless_chromium(page):
    with _chromium() as driver:
        driver.get(page.resolve().as_uri())
        state = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(state) >= 5
        assert all(c and w > 0 and h > 0 for c, w, h in state), state
        assert driver.execute_script("return document.querySelectorAll('svg circle, svg path').length") == 4
        assert driver.title.startswith("htsr report")
        # sorting: click the alpha header twice, ascending then descending, numerically
        heads = driver.find_elements("css selector", "#layer-table thead th")
        col = [h.text.strip(" ↕") for h in heads].index("alpha")
        cells = "return Array.from(document.querySelectorAll('#layer-table tbody tr')).map(r => " \
                f"parseFloat(r.cells[{col}].getAttribute('data-v')))"
        heads[col].click()
        up = driver.execute_script(cells)
        heads[col].click()
        down = driver.execute_script(cells)
        assert up == sorted(up) and down == sorted(up, reverse=True) and len(up) == 4
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR", "WARNING")]
        assert errors == []


# the layers table's fit and the alpha chart's boxes, measured by the browser at 1400 px
LAYOUT_JS = """
const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const table = document.querySelector('table#layer-table'), scroll = table.closest('.scroll');
const svg = document.querySelector('h2#alpha ~ svg');
const marks = Array.from(svg.querySelectorAll('circle, path'));
const texts = Array.from(svg.querySelectorAll('text'));
const hits = [];
for (const t of texts) for (const m of marks) {
  const a = box(t), b = box(m);
  if (a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]) hits.push([t.textContent, m.outerHTML]);
}
return {inner: window.innerWidth, doc: document.documentElement.scrollWidth, right: box(scroll)[2],
        scroll: [scroll.scrollWidth, scroll.clientWidth], shown: table.rows[0].querySelectorAll('th:not(.x)').length,
        all: table.rows[0].cells.length, visible: Array.from(table.rows[0].cells).filter(c => c.getBoundingClientRect().width > 0).length,
        marks: marks.map(m => [m.tagName, m.getAttribute('fill')]), texts: texts.length, hits: hits};
"""


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_layout_at_1400_px_in_headless_chromium(tmp_path):
    # a seeded model that uses both bands and the clipped top: heavy-tailed layers (alpha < 2), near-Gaussian
    # tall ones (alpha > 6) and one far above the chart (drawn as a triangle), under long real-world names
    # (sentence-transformers' keys), and an invalid layer whose reason fills the reason column
    rng = np.random.default_rng(7)
    model = {}
    for i in range(4):
        model[f"0.auto_model.encoder.layer.{i}.attention.self.query.weight"] = rng.standard_t(1.5, (192, 96))
        model[f"0.auto_model.encoder.layer.{i}.intermediate.dense.weight"] = rng.standard_normal((384, 48))
        model[f"0.auto_model.encoder.layer.{i}.output.dense.weight"] = rng.standard_t(4, (160, 96))
    model["0.auto_model.encoder.layer.4.output.dense.weight"] = np.zeros((160, 96))
    model["0.auto_model.pooler.dense.weight"] = rng.standard_normal((4000, 16))
    report = htsr.analyze(model, randomize=True, mp_fit=True, keep_esd=True)
    alphas = report.details["alpha"]
    assert (alphas < 2).any() and (alphas > 6).any() and (alphas > 21).any()
    assert report.details["reason"].str.contains("all entries are zero").any()
    path = tmp_path / "report.html"
    path.write_text(render_report(report, figures=False), encoding="utf-8")
    with _chromium("--window-size=1400,1000") as driver:
        driver.get(path.as_uri())
        got = driver.execute_script(LAYOUT_JS)
        assert got["inner"] == 1400, got
        # (1) the default (short) view of the layers table fits: no page scroll, no scroll inside its box
        assert got["doc"] <= got["inner"] and got["right"] <= 1400, got
        assert got["scroll"][0] <= got["scroll"][1], got
        assert got["visible"] == got["shown"] < got["all"] == len(report.details.columns), got
        # (2) every point of the chart is drawn, in both bands' colours and as a triangle, and no text box
        # (legend, ticks, axis labels) intersects a point's box
        assert len(got["marks"]) == alphas.notna().sum() == len(report.details) - 1 and got["texts"] > 10, got
        assert {"circle", "path"} == {t for t, _ in got["marks"]}
        assert {"#c0392b", "#d4a017"} <= {c for _, c in got["marks"]}
        assert got["hits"] == [], got["hits"]
        # every column is one click away, and then the table scrolls inside its box, not the page
        driver.find_element("css selector", "label[for=allcols-layer-table]").click()
        wide = driver.execute_script(LAYOUT_JS)
        assert wide["visible"] == wide["all"] and wide["doc"] <= 1400 and wide["right"] <= 1400, wide
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR", "WARNING")]
        assert errors == []


def test_without_matplotlib_the_page_is_complete_without_figures(report, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    html = render_report(report)
    assert "<img" not in html and "<svg" in html and 'id="layer-table"' in html
    assert "Figure not available" in html
