"""The over-training study's pipeline end to end, CI-sized (--quick: one seed, 12 epochs); no outcome asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

STUDY = Path(__file__).resolve().parents[1] / "examples" / "overtraining" / "study.py"


def test_quick_study_writes_histories_table_summary_and_figures(tmp_path, capsys):
    study = load_script(STUDY, "overtraining_study")
    assert study.main(["--quick", "--out", str(tmp_path)]) == 0
    runs = sorted((tmp_path / "runs").glob("*.jsonl"))
    assert [p.name for p in runs] == ["adam_noise0_seed0.jsonl", "sgd_noise0_seed0.jsonl"]
    for p in runs:
        records = [json.loads(line) for line in p.read_text().splitlines()]
        assert [r["step"] for r in records] == [0, 3, 6, 9, 12]
        assert all(set(r["layers"]) == {"0", "2", "4", "6"} for r in records)
        assert all(r["layers"]["0"]["num_traps"] is not None for r in records)
    epochs = (tmp_path / "epochs.csv").read_text().splitlines()
    assert epochs[0].startswith("run,optimizer,noise,seed,epoch,train_loss,test_loss")
    assert len(epochs) == 1 + 2 * 13
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["runs"] == 2 and set(summary["flags"]) >= {"trap", "mean_alpha_below_2", "early_stop_rule"}
    for name in ("fig_curves.png", "fig_layers.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
