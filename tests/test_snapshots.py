"""Snapshot golden files of htsr's own outputs: the CLI table for MiniLM, the JSON report, the HTML report's structure.

Regenerate (after an intended change; review the diff): ``python -m pytest tests/test_snapshots.py --update-goldens``.
"""

from __future__ import annotations

import io
import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest

import htsr
from htsr import cli


def _small_model() -> dict:
    """Seeded: a planted trap, a heavy-tailed (over-trained) layer, a wide (under-trained) one, a skipped one."""
    rng = np.random.default_rng(2024)
    trap = rng.standard_normal((256, 128)) / 12
    trap[10, 20] = 9.0
    return {"trap.weight": trap, "heavy.weight": rng.standard_t(1.5, (200, 100)),
            "wide.weight": rng.standard_normal((400, 40)), "tiny.weight": rng.standard_normal((4, 3)),
            "plain.weight": rng.standard_normal((150, 60))}


@pytest.fixture(scope="module")
def small_report():
    return htsr.analyze(_small_model(), randomize=True, mp_fit=True, seed=0, progress=False)


def _rounded(value, digits: int = 6):
    """Floats to ``digits`` significant digits (the snapshot must not depend on the last bits of BLAS)."""
    if isinstance(value, float):
        return value if not math.isfinite(value) or value == 0 else float(f"{value:.{digits}g}")
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return value


def test_json_report_snapshot(small_report, snapshot):
    doc = json.loads(small_report.to_json())
    for key in ("date", "elapsed_s", "htsr_version"):  # the run's circumstances, not its results
        doc["meta"].pop(key)
    snapshot("small_report.json", json.dumps(_rounded(doc), indent=1) + "\n")


class _Outline(HTMLParser):
    """The structure of a page: headings, tables (columns, hidden columns, rows), charts, figures."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._stack: list[str] = []
        self._text: list[str] = []
        self._table: dict | None = None
        self._svg: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("h1", "h2", "h3", "th"):
            self._stack.append(tag)
            self._text = []
        if tag == "table":
            self._table = {"id": a.get("id", ""), "cls": a.get("class", ""), "cols": [], "hidden": [], "rows": 0,
                           "head": False}
        elif tag == "thead" and self._table is not None:
            self._table["head"] = True
        elif tag == "th" and self._table is not None and "x" in (a.get("class") or "").split():
            self._table["hidden"].append(len(self._table["cols"]))
        elif tag == "tr" and self._table is not None:
            self._table["rows"] += 1
        elif tag == "svg":
            self._svg = {"circle": 0, "path": 0, "polyline": 0, "rect": 0}
        elif self._svg is not None and tag in self._svg:
            self._svg[tag] += 1
        elif tag == "img":
            self.lines.append(f"    img: {a.get('alt', '')}")
        elif tag == "section":
            self.lines.append(f"  section.{a.get('class', '')}")
        elif tag == "input":
            self.lines.append(f"  toggle: {a.get('type')} {a.get('id')}")

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3", "th") and self._stack:
            self._stack.pop()
            text = " ".join("".join(self._text).split())
            if tag == "th" and self._table is not None:
                self._table["cols"].append(text)
            elif tag != "th":
                self.lines.append(f"{'  ' * (int(tag[1]) - 1)}{tag}: {text}")
        elif tag == "table" and self._table is not None:
            t = self._table
            shown = [c for i, c in enumerate(t["cols"]) if i not in t["hidden"]]
            what = "columns" if t["head"] else "row labels"
            self.lines.append(f"  table#{t['id']}.{t['cls']}: {t['rows'] - (1 if t['head'] else 0)} rows; "
                              f"{what} {', '.join(shown)}" + (f"; {len(t['hidden'])} more behind the toggle"
                                                                  if t["hidden"] else ""))
            self._table = None
        elif tag == "svg" and self._svg is not None:
            self.lines.append("  svg: " + ", ".join(f"{v} {k}" for k, v in self._svg.items()))
            self._svg = None

    def handle_data(self, data):
        if self._stack:
            self._text.append(data)


def test_html_structure_snapshot(small_report, snapshot):
    pytest.importorskip("matplotlib")
    outline = _Outline()
    outline.feed(small_report.to_html())
    snapshot("small_report.html.txt", "\n".join(outline.lines) + "\n")


def test_cli_table_minilm_snapshot(minilm_path, snapshot):
    out = io.StringIO()
    path = next(minilm_path.rglob("model.safetensors"))
    code = cli.main(["analyze", str(path), "--randomize", "--format", "table", "-q"], stdout=out, stderr=io.StringIO())
    assert code == 0
    snapshot("minilm_cli_randomize.txt", out.getvalue())
