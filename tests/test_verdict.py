"""The verdict (htsr.verdict): a snapshot of MiniLM's, and known answers on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

import htsr
from htsr.verdict import MEANING_DIM, MEANING_ISOLATED, NOT_LOOKED, verdict, verdict_html, verdict_text


@pytest.fixture(scope="module")
def minilm_report(minilm_path):
    return htsr.analyze(str(minilm_path / "model.safetensors"), randomize=True, seed=0, progress=False)


def test_minilm_verdict_snapshot(minilm_report, snapshot):
    text = verdict_text(minilm_report)
    snapshot("verdict_minilm.txt", text)
    # the facts the snapshot holds (docs/traps.md): one outlier dimension, one isolated trap
    assert "39 layers analyzed, 2 skipped" in text  # token_type_embeddings (too small) and the position_ids buffer
    assert "Outlier dimension 99 (row+col of 384): 6 traps in 5 layers" in text
    assert "1 isolated correlation trap in 1 layer: encoder.layer.4.output.dense" in text


def test_minilm_verdict_everywhere(minilm_report):
    first = verdict(minilm_report)[0].headline
    assert first in repr(minilm_report)
    assert first in minilm_report._repr_html_()
    from htsr.html import render_report

    page = render_report(minilm_report, figures=False)
    assert page.index('id="verdict"') < page.index('id="layers"')  # above the tables
    from htsr.cli import report_table

    assert "Verdict:\n  " + first in report_table(minilm_report)
    nb = minilm_report._repr_html_()
    assert "<svg" in nb and "Summary" in nb and 'id="layers"' not in nb  # not the whole report


def test_verdict_names_layers_and_splits_traps():
    rng = np.random.default_rng(3)
    w = {f"l{i}.weight": rng.standard_normal((300, 120)) for i in range(3)}
    for k in ("l0.weight", "l1.weight"):  # one index shared by two layers' traps: an outlier dimension
        w[k][7, 11 if k == "l0.weight" else 40] = 60.0
    w["l2.weight"][100, 50] = 60.0  # a trap of its own: isolated
    w["tiny.weight"] = np.linalg.qr(rng.standard_normal((300, 120)))[0] * 10  # flat spectrum: alpha far from 2..6
    report = htsr.analyze(w, randomize=True, seed=0, progress=False)
    findings = verdict(report)
    text = verdict_text(report)
    assert findings[0].headline.startswith("4 layers analyzed")
    assert "Outlier dimension 7 (row of 300)" in text and "l0, l1" in text.replace(".weight", "")
    assert "isolated correlation trap in 1 layer: l2" in text
    assert MEANING_DIM in text and MEANING_ISOLATED in text
    alpha_line = [f.headline for f in findings if f.headline.startswith("alpha")]
    outside = [n for n, a in zip(report.details["name"], report.details["alpha"]) if not 2 <= a <= 6]
    for name in outside:
        assert any(name in line for line in alpha_line)


def test_verdict_without_randomize_and_escaping():
    w = {"<b>x</b>.weight": np.random.default_rng(0).standard_normal((200, 50))}
    report = htsr.analyze(w, progress=False)
    assert NOT_LOOKED in verdict_text(report)
    assert "<b>x</b>" not in verdict_html(report)
