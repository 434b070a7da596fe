"""Small seeded torch models for the option golden data (imported by the generator and the tests).

Weights are drawn with numpy (Student-t(3) × 0.05, so the fits see real heavy tails) and
copied into the modules, so both interpreters build bit-identical float32 weights.
Every analyzed layer has at least 32 eigenvalues (the reference's small-sample fit,
used below 20, stays out of these cases even after clipping 9 fingers).
"""

from __future__ import annotations

import numpy as np

MODELS = ("mlp_t", "conv_t", "conv_wide")


def _student_t(module, seed: int, df: float = 3.0, scale: float = 0.05):
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight") and p.ndim >= 2:
                values = rng.standard_t(df, size=tuple(p.shape)) * scale
                p.copy_(torch.from_numpy(values.astype(np.float32)))
    return module.eval()


def build(name: str):
    """The torch module called ``name`` (one of :data:`MODELS`)."""
    import torch.nn as nn

    if name == "mlp_t":
        m = nn.Sequential(nn.Linear(100, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32))
        return _student_t(m, 11)
    if name == "conv_t":
        m = nn.Sequential(nn.Conv2d(4, 16, 3), nn.ReLU(), nn.Conv2d(16, 24, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(24 * 4 * 4, 40))
        return _student_t(m, 12)
    if name == "conv_wide":  # a conv layer with fewer outputs than inputs (slices transposed)
        m = nn.Sequential(nn.Conv2d(4, 32, 3), nn.ReLU(), nn.Conv2d(32, 12, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(12 * 4 * 4, 36))
        return _student_t(m, 13)
    raise KeyError(name)
