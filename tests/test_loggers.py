"""Monitor → TensorBoard / W&B / MLflow (htsr.loggers), each read back with that tool's own reader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import htsr
from htsr.errors import OptionError


def _weights(scale: float) -> dict:
    rng = np.random.default_rng(0)
    w = {"fc1.weight": rng.standard_normal((120, 50)), "fc2.weight": rng.standard_normal((80, 40))}
    w["fc1.weight"][3, 7] = 40.0  # a correlation trap
    w["fc2.weight"] = w["fc2.weight"] + scale * rng.standard_normal((80, 40))
    return w


def _train(monitor) -> list[dict]:
    for step, scale in ((0, 0.0), (10, 0.5), (20, 1.0)):
        monitor.step(_weights(scale), step)
    return monitor.history


def _expected(history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for r in history:
        out.setdefault("htsr/mean_alpha", []).append((r["step"], r["mean_alpha"]))
        out.setdefault("htsr/num_traps", []).append((r["step"], r["num_traps"]))
        for name, layer in r["layers"].items():
            out.setdefault(f"htsr/layer_alpha/{name}", []).append((r["step"], layer["alpha"]))
            out.setdefault(f"htsr/layer_rel_change/{name}", []).append((r["step"], layer["rel_change"]))
    return out


def test_tensorboard_round_trip(tmp_path):
    tb = pytest.importorskip("torch.utils.tensorboard")
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    writer = tb.SummaryWriter(log_dir=str(tmp_path))
    history = _train(htsr.Monitor(every=1, log_to=writer))
    writer.close()
    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0})
    acc.Reload()
    for tag, values in _expected(history).items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in values]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in values], rtol=1e-6)
    assert [e.value for e in acc.Scalars("htsr/layer_num_traps/fc1")] == [1.0, 1.0, 1.0]
    assert {e.value for e in acc.Scalars("htsr/num_outlier_dims")} == {0.0}
    hist = acc.Histograms("htsr/layer_log10_esd/fc2")
    assert [h.step for h in hist] == [0, 10, 20]
    assert hist[0].histogram_value.num == 40  # one entry per eigenvalue of the 80×40 layer


def test_mlflow_round_trip(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the local file store, read back below
    uri = tmp_path.as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("htsr-test")
    try:
        history = _train(htsr.Monitor(every=1, log_to=mlflow))
        run_id = mlflow.active_run().info.run_id
    finally:
        mlflow.end_run()
    client = MlflowClient(uri)
    for tag, values in _expected(history).items():
        got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, tag))
        assert [s for s, _ in got] == [s for s, _ in values]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in values], rtol=1e-12)


def test_wandb_offline_round_trip(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    exe = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb")
    if exe is None:
        pytest.skip("the wandb command is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="htsr-test",
                     settings=wandb.Settings(silent=True, x_disable_stats=True))
    try:
        history = _train(htsr.Monitor(every=1, log_to=run))
    finally:
        run.finish()
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")
    # W&B's own reader of the run's transaction log
    out = subprocess.run([exe, "leet", "inspect", "--json", str(folder)], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, WANDB_MODE="offline"))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line)["history"]["item"] for line in out.stdout.splitlines()
            if line.startswith("{") and '"type":"history"' in line]
    assert [r["_step"] for r in rows] == [0, 10, 20]
    for tag, values in _expected(history).items():
        np.testing.assert_allclose([r[tag] for r in rows], [v for _, v in values], rtol=1e-12)
    assert rows[0]["htsr/layer_log10_esd/fc2._type"] == "histogram"
    assert sum(rows[0]["htsr/layer_log10_esd/fc2.values"]) == 40


def test_bad_target_fails_at_once():
    with pytest.raises(OptionError, match="log_to"):
        htsr.Monitor(every=1, log_to="runs/")


@pytest.mark.slow
def test_huggingface_trainer_with_tensorboard_gets_htsr_scalars_in_its_run(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(16, 64)
            self.fc2 = torch.nn.Linear(64, 2)

        def forward(self, x, labels):
            logits = self.fc2(torch.relu(self.fc1(x)))
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    torch.manual_seed(0)
    data = [{"x": torch.randn(16), "labels": torch.tensor(i % 2)} for i in range(32)]
    monitor = htsr.Monitor(every=2, randomize=False)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8,
                                          logging_steps=1, report_to=["tensorboard"], use_cpu=True, save_strategy="no",
                                          disable_tqdm=True)
    trainer = transformers.Trainer(model=Tiny(), args=args, train_dataset=data,
                                   callbacks=[monitor.huggingface_callback()])
    trainer.train()
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    acc = ea.EventAccumulator(str(run), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/loss" in tags  # the Trainer's own scalars …
    assert [e.step for e in acc.Scalars("htsr/mean_alpha")] == [r["step"] for r in monitor.history] == [1, 2, 4]
    assert "htsr/layer_alpha/fc1" in tags  # … and htsr's, in the same run
