"""Rows built from several layers: ``intra=True`` (pairs) and ``stacked=True`` (all at once).

Orchestration only: loads the planned tensors in order, forms the matrix
(:mod:`htsr.spectral.intra`, :mod:`htsr.spectral.stacked`) and hands it to the
engine's row pipeline with the matching ESD. Runs serially on the CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .config import AnalysisConfig, LayerType
from .engine import Plan, analyze_array
from .errors import HtsrError
from .matrices import Geometry
from .prepare import read_matrix
from .results import LayerResult
from .spectral.esd import compute_esd, top_esd
from .spectral.intra import intra_esd, intra_matrix, reference_slice
from .spectral.stacked import reference_matrix, stack_matrices
from .treatment import HTSR, Treatment


def run_intra(plans: list[Plan], config: AnalysisConfig, treatment: Treatment = HTSR) -> list[list[LayerResult]]:
    """Rows ``"<prev id> X <id> "`` (the reference's names) for consecutive analyzed layers that share a dimension."""
    outputs: list[list[LayerResult]] = []
    prev: tuple[Any, np.ndarray] | None = None
    for p in (q for q in plans if not q.reason):
        assert p.geometry is not None
        try:
            W, _ = read_matrix(p.tensor)
        except HtsrError:
            prev = None
            continue
        cur = reference_slice(W)
        if prev is not None:
            rng = np.random.default_rng([config.seed, p.tensor.layer_id])
            X = intra_matrix(prev[1], cur, sparsify=config.sparsify, rng=rng)
            if X is not None:
                if p.tensor.layer_type is LayerType.CONV2D and config.conv2d_norm:
                    X = X * np.sqrt(0.5)
                g = Geometry(max(X.shape), min(X.shape), p.geometry.rf)
                n_comp = p.geometry.num_evals

                def esd_fn(sub: np.ndarray, N: int, n_comp: int = n_comp) -> Any:
                    return intra_esd(sub[0], N, n_comp)

                with np.errstate(all="ignore"):
                    rows = analyze_array(p.tensor, g, X, config.replace(pool=True), esd_fn=esd_fn, treatment=treatment)
                name = f"{prev[0].layer_id} X {p.tensor.layer_id} "
                outputs.append([dataclasses.replace(r, name=name, xflag=True, num_evals=min(n_comp, g.M))
                                for r in rows])
        prev = (p.tensor, cur)
    return outputs


def run_stacked(plans: list[Plan], config: AnalysisConfig, treatment: Treatment = HTSR) -> list[list[LayerResult]]:
    """One row, ``layer_id`` 0 and name ``Stacked Layer``: every analyzed layer stacked (:mod:`htsr.spectral.stacked`)."""
    todo = [p for p in plans if not p.reason]
    mats = []
    for p in todo:
        W, _ = read_matrix(p.tensor)
        mats.append(reference_matrix(W))
    if not mats:
        return []
    X = stack_matrices(mats)
    first = todo[0]
    assert first.geometry is not None
    n_comp = min(first.geometry.num_evals, X.shape[1])
    g = Geometry(X.shape[0], X.shape[1], 1)

    def esd_fn(sub: np.ndarray, N: int) -> Any:
        return top_esd(compute_esd(sub, N).evals, n_comp, N)

    dense = dataclasses.replace(first.tensor, layer_type=LayerType.DENSE)
    with np.errstate(all="ignore"):
        rows = analyze_array(dense, g, X, config.replace(pool=True), esd_fn=esd_fn, treatment=treatment)
    return [[dataclasses.replace(r, layer_id=0, name="Stacked Layer", layer_type="stacked", num_evals=n_comp)
             for r in rows]]
