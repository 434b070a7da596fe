"""The reference's ``distances()``: what :meth:`htsr.compat.WeightWatcher.distances` returns.

htsr's own comparison of two models is :func:`htsr.compare` (layers matched by
name, spectra compared); this is the reference's layer-by-layer table, layers
paired in order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..config import AnalysisConfig, LayerType
from ..errors import HtsrError


def _ref_cka(W1: np.ndarray, W2: np.ndarray) -> float:
    """The reference's overlap: ‖W1ᵀW2‖_F / sqrt(‖W1ᵀW1‖_F ‖W2W2ᵀ‖_F) (uncentered, not squared)."""
    num = float(np.linalg.norm(W1.T @ W2))
    den = math.sqrt(float(np.linalg.norm(W1.T @ W1)) * float(np.linalg.norm(W2 @ W2.T)))
    if den < 1e-6:
        den += 1e-6
    return num / den


def _ref_mats(W: np.ndarray, conv2d: bool) -> list[np.ndarray]:
    """The matrices the reference compares: the weight as stored, or one (rows ≥ cols) matrix per kernel position."""
    if not conv2d:
        return [W]
    kh, kw = W.shape[2], W.shape[3]
    mats = []
    for i in range(kh):
        for j in range(kw):
            m = W[:, :, i, j]
            mats.append(m.T if m.shape[0] < m.shape[1] else m)
    return mats


def reference_distances(model_1: Any, model_2: Any, method: str, config: AnalysisConfig) -> tuple[float, float, Any]:
    """``(avg_dW, avg_db, details)`` as the reference's ``distances`` computes them.

    ``method``: 'raw' (whole tensors, and dense layers' biases), 'euclidean' (the
    layer's matrices; a conv layer averages its kernel positions) or 'cka' (the
    reference's uncentered overlap, averaged likewise). Layers are paired in
    order; both models must have the same analyzable layers.
    """
    import pandas as pd

    from ..compare import read_weights
    from ..engine import plan  # the engine and the sources load on first use: ``import htsr`` stays light
    from ..sources import open_source

    def chosen(model: Any) -> list:
        out = []
        for p in plan(open_source(model), config):
            if p.reason:
                continue
            g = p.geometry
            assert g is not None
            if not config.pool and p.tensor.layer_type is LayerType.CONV2D and not (
                    config.min_evals <= g.M <= config.max_evals):
                continue  # unpooled, each kernel position is its own layer of M eigenvalues
            out.append(p)
        return out

    plans_1, plans_2 = chosen(model_1), chosen(model_2)
    if len(plans_1) != len(plans_2):
        raise HtsrError(
            f"WeightWatcher.distances: the models have {len(plans_1)} and {len(plans_2)} analyzable layers; "
            "they must have the same layers (htsr.compare matches layers by name)."
        )
    rows = []
    for p1, p2 in zip(plans_1, plans_2):
        t = p1.tensor
        (W1, b1), (W2, b2) = read_weights(p1), read_weights(p2)
        conv2d = t.layer_type is LayerType.CONV2D
        base = {"layer_id": t.layer_id, "name": t.name, "longname": t.longname, "method": method}
        same = W1.shape == W2.shape
        if method == "raw":
            dW = float(np.linalg.norm(W1 - W2)) if same else float("nan")
            row = dict(base, M=int(min(W1.shape)), N=int(max(W1.shape)), delta_W=dW, b_shape="unknown", delta_b=0.0)
            if t.layer_type is LayerType.DENSE and b1 is not None and b2 is not None and b1.shape == b2.shape:
                row.update(b_shape=int(b1.shape[0]), delta_b=float(np.linalg.norm(b1 - b2)))
            if config.pool or not conv2d:
                rows.append(row if config.pool else dict(row, slice_id=0))
            else:
                rows.extend(dict(row, slice_id=k) for k in range(W1.shape[2] * W1.shape[3]))
            continue
        fn = _ref_cka if method == "cka" else (lambda x, y: float(np.linalg.norm(x - y)))
        m1, m2 = _ref_mats(W1, conv2d), _ref_mats(W2, conv2d)
        dists = [fn(x, y) if x.shape == y.shape else float("nan") for x, y in zip(m1, m2)]
        row = dict(base, M=int(min(m1[0].shape)), N=int(max(m1[0].shape)), b_shape="unknown", delta_b=0.0)
        if config.pool:
            rows.append(dict(row, delta_W=float(np.mean(dists)) if same else float("nan")))
        else:
            rows.extend(dict(row, delta_W=d if same else float("nan"), slice_id=k) for k, d in enumerate(dists))
    lead = ["method", "layer_id", "name", "delta_W", "delta_b", "M", "N", "b_shape", "longname"]
    if not config.pool:
        lead.append("slice_id")
    frame = pd.DataFrame(rows, columns=lead)
    frame["delta_W"] = frame["delta_W"].astype(float)
    frame["delta_b"] = frame["delta_b"].astype(float)
    frame["b_shape"] = frame["b_shape"].astype(object)
    frame = frame.set_index("layer_id")
    avg_dW = float(np.mean(frame["delta_W"].to_numpy())) if len(frame) else float("nan")
    avg_db = float(np.mean(frame["delta_b"].to_numpy())) if len(frame) else float("nan")
    return avg_dW, avg_db, frame
