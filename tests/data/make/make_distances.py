"""Golden data for ``WeightWatcher.distances``: the reference tool's results on small torch models.

Regenerate (the reference's interpreter, weightwatcher 0.7.7, in ``$WW_PYTHON``)::

    $WW_PYTHON tests/data/make/make_distances.py

writes ``tests/data/distances_ww077.json``. The models are built by :func:`models`
from numpy generators with fixed seeds (no torch RNG), so tests/test_compare.py
rebuilds exactly the same weights with htsr's interpreter.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "distances_ww077.json"


def build(seed: int, scale: float = 1.0, const: float | None = None):
    """Conv layers with out > in and out < in, dense with and without bias, an embedding, a too-small layer."""
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(12, 16, 2), nn.Conv2d(20, 12, 3), nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(64, 32), nn.Linear(32, 10, bias=False), nn.Embedding(50, 20), nn.Linear(5, 3), nn.Linear(200, 100),
    )
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in model.parameters():
            values = rng.standard_normal(tuple(p.shape)) * scale if const is None else np.full(tuple(p.shape), const)
            p.copy_(torch.from_numpy(values.astype(np.float32)))
    return model


def models() -> dict:
    """Name -> (model_1, model_2)."""
    return {
        "seed0_vs_seed1": (build(0), build(1)),
        "seed0_vs_scaled": (build(0), build(0, scale=1.5)),
        "identical": (build(2), build(2)),
        "ones_vs_zeros": (build(0, const=1.0), build(0, const=0.0)),
    }


CASES = [
    {"method": m, "pool": pool, "layers": layers}
    for m in ("raw", "euclidean", "cka") for pool in (True, False) for layers in ([], [6, 10])
]


def main() -> None:
    import weightwatcher as ww

    logging.disable(logging.WARNING)
    watcher = ww.WeightWatcher()
    out = []
    for name, (m1, m2) in models().items():
        for case in CASES:
            avg_dW, avg_db, details = watcher.distances(m1, m2, method=case["method"], pool=case["pool"],
                                                        layers=case["layers"])
            records = details.reset_index().to_dict("records")
            for r in records:
                r["b_shape"] = str(r["b_shape"])
            out.append({"models": name, **case, "avg_dW": float(avg_dW), "avg_db": float(avg_db),
                        "columns": ["layer_id"] + list(details.columns),
                        "details": json.loads(json.dumps(records, default=lambda v: v.item()))})
    OUT.write_text(json.dumps({"weightwatcher": ww.__version__, "results": out}, indent=1) + "\n")
    print(f"wrote {OUT} ({len(out)} cases)")


if __name__ == "__main__":
    main()
