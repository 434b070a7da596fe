"""Golden data for ``base_model=``: the reference tool's rows for a fine-tuned model against its base.

Regenerate (the reference's interpreter, weightwatcher 0.7.7 with torch):

    "$WW_PYTHON" tests/data/make/make_delta_golden.py

Writes ``tests/data/delta_weights.npz`` (the base and fine-tuned weights, seeded) and
``tests/data/delta_ww077.csv`` (``WeightWatcher(model=tuned, base_model=base).analyze()``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import weightwatcher as ww

DATA = Path(__file__).resolve().parents[1]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(120, 48)
        self.fc1 = torch.nn.Linear(48, 96)
        self.conv = torch.nn.Conv2d(16, 24, 3)
        self.fc2 = torch.nn.Linear(96, 64)


def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2026)
    out = {}
    for k, v in Net().state_dict().items():
        base = rng.standard_t(4, tuple(v.shape)).astype(np.float32)
        out[f"base/{k}"] = base
        out[f"tuned/{k}"] = (base + 0.2 * rng.standard_t(3, tuple(v.shape))).astype(np.float32)
    return out


def model(arrays: dict, which: str) -> Net:
    net = Net()
    net.load_state_dict({k[len(which) + 1:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(which)})
    return net.eval()


def main() -> None:
    logging.disable(logging.WARNING)
    arrays = weights()
    np.savez(DATA / "delta_weights.npz", **arrays)
    details = ww.WeightWatcher(model=model(arrays, "tuned"), base_model=model(arrays, "base")).analyze()
    details.to_csv(DATA / "delta_ww077.csv", index=False)
    print(details[["layer_id", "name", "alpha", "log_norm"]])


if __name__ == "__main__":
    main()
