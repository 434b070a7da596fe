"""Golden data for ``peft=``: the reference tool's rows for a model with PEFT's LoRA module layout.

The model is plain torch with PEFT's structure (``base_layer``, ``lora_dropout``, ``lora_A`` /
``lora_B`` ModuleDicts holding a ``default`` Linear), so the reference's environment needs no peft.
Rank 24: at least 20 eigenvalues per LoRA row, where the reference's power-law fit is the standard
one (htsr does not reproduce its separate small-sample estimator, see docs/compat.md).

Regenerate (the reference's interpreter, weightwatcher 0.7.7 with torch):

    "$WW_PYTHON" tests/data/make/make_peft_golden.py

Writes ``tests/data/peft_weights.npz`` and ``tests/data/peft_ww077_true.csv`` / ``peft_ww077_with_base.csv``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import weightwatcher as ww

DATA = Path(__file__).resolve().parents[1]
RANK = 24


class LoraLinear(torch.nn.Module):
    def __init__(self, n_in: int, n_out: int, r: int):
        super().__init__()
        self.base_layer = torch.nn.Linear(n_in, n_out)
        self.lora_dropout = torch.nn.ModuleDict({"default": torch.nn.Identity()})
        self.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(n_in, r, bias=False)})
        self.lora_B = torch.nn.ModuleDict({"default": torch.nn.Linear(r, n_out, bias=False)})


def build() -> torch.nn.Module:
    return torch.nn.Sequential(LoraLinear(64, 96, RANK), torch.nn.ReLU(), LoraLinear(96, 80, RANK),
                               torch.nn.Linear(80, 40)).eval()


def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {k: rng.standard_t(4, tuple(v.shape)).astype(np.float32) for k, v in build().state_dict().items()}


def model(arrays: dict) -> torch.nn.Module:
    m = build()
    m.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    return m


def main() -> None:
    logging.disable(logging.WARNING)
    arrays = weights()
    np.savez(DATA / "peft_weights.npz", **arrays)
    for peft, name in ((True, "true"), ("with_base", "with_base")):
        details = ww.WeightWatcher(model=model(arrays)).analyze(peft=peft)
        details.to_csv(DATA / f"peft_ww077_{name}.csv", index=False)
        print(details[["layer_id", "name", "longname", "num_evals", "alpha", "log_norm"]])


if __name__ == "__main__":
    main()
