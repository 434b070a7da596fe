"""Write htsr's own randomization results on a heavy-tailed, scaled-down VGG-11 (``tests/test_trap_golden.py``).

This golden file is htsr's output, not the reference's: it pins the randomized
ESD columns, the trap tables and the located entries for a fixed seed, so that
speed work on :mod:`htsr.spectral.randomize` and :mod:`htsr.spectral.traps`
provably keeps them identical. Run from the repository root with htsr on the
path (torch needed)::

    python tests/data/make/make_trap_golden.py

The model is VGG-11 with batch norm (torchvision's layer structure: eight 3×3
convolutions with the pooling pattern 64, M, 128, M, 256, 256, M, 512, 512, M,
512, 512, M, and a three-layer classifier) with every width divided by
``WIDTH_DIV``; every ≥ 2-D weight is Student-t (ν = 3) scaled to the
standard deviation of torch's default initialisation, drawn from
``default_rng([SEED, i])``. The file holds, for ``htsr.analyze(model,
randomize=True)`` and for the compat ``WeightWatcher(model).analyze(randomize=True)``,
every ``randomize`` column of every row and every trap row (eigenvalue,
entries, components), with floats written by ``repr`` (exact).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "trap_golden_vgg11.json"

SEED = 20261206
WIDTH_DIV = 4
ANALYZE_SEED = 0
RAND_COLUMNS = ("max_rand_eval", "num_traps", "rand_W_scale", "rand_bulk_max", "rand_bulk_min", "rand_distance",
                "rand_mp_softrank", "rand_num_spikes", "rand_sigma_mp", "ww_maxdist", "ww_softrank",
                "rand_mean_spike", "rand_mean_spike_eval")


def vgg11_small():
    """VGG-11-bn's structure at 1/WIDTH_DIV width, heavy-tailed seeded weights (plain torch)."""
    import torch
    from torch import nn

    layers: list = []
    c = 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            w = int(v) // WIDTH_DIV
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
    hidden = 4096 // (2 * WIDTH_DIV * WIDTH_DIV)
    model = nn.Sequential(nn.Sequential(*layers), nn.Flatten(),
                          nn.Sequential(nn.Linear(c * 4, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                        nn.Linear(hidden, 100)))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            if p.ndim < 2:
                continue
            fan_in = math.prod(p.shape[1:])
            std = math.sqrt(1.0 / (3.0 * fan_in))  # torch's default U(±1/√fan_in)
            t = np.random.default_rng([SEED, i]).standard_t(3, size=tuple(p.shape))
            p.copy_(torch.from_numpy((t / math.sqrt(3.0) * std).astype(np.float32)))
    return model


def _plain(value):
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def rows_of(frame) -> list[dict]:
    cols = ["layer_id"] + [c for c in RAND_COLUMNS if c in frame.columns]
    return [{c: _plain(r[c]) for c in cols} for r in frame[cols].to_dict(orient="records")]


def trap_rows(report) -> list[dict]:
    """Every trap: the report's trap table (with its grouping) and each trap's components from the layer results."""
    cols = ("layer_id", "slice_id", "trap_eval", "bulk_max", "entries", "kind", "group")
    rows = [{c: _plain(None if c == "group" and str(r[c]) == "<NA>" else r[c]) for c in cols}
            for r in report.traps.to_dict(orient="records")]
    components = [_plain(t.components) for res in report.layers if res.traps is not None for t in res.traps.traps]
    assert len(components) == len(rows)
    for row, comp in zip(rows, components):
        row["components"] = comp
    return rows


def tables() -> dict:
    """The golden content: htsr's native and compat randomized results on the model."""
    import htsr

    model = vgg11_small()
    native = htsr.analyze(model, randomize=True, seed=ANALYZE_SEED)
    compat = htsr.WeightWatcher(model=model).analyze(randomize=True, seed=ANALYZE_SEED)
    return {"native": rows_of(native.details), "native_traps": trap_rows(native), "compat": rows_of(compat)}


def main() -> None:
    OUT.write_text(json.dumps(tables(), indent=1, allow_nan=True) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
