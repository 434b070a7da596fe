"""One layer-preparation path: load → matrices → randomize, for every caller.

:func:`htsr.analyze` (the engine), the transforms (:mod:`htsr.transforms`), the
compat class (``get_ESD``, ``get_Weights``) and the rows built from several layers
(:mod:`htsr.combined`) read a layer, form its matrices and shuffle them through
these functions only, so they see the same matrices and, for one seed, the same
shuffles bit for bit:

* :func:`read_matrix` — the tensor, checked, as a float64 copy;
* :func:`layer_stack` — its stack of matrices (rf, rows, cols) under a
  :class:`~htsr.treatment.Treatment`, and whether the ESD is cut to its top M;
* :func:`row_esd` — a row's ESD, with that cut;
* :func:`shuffle_row` / :func:`randomize_row` — the randomized ESD (and trap
  search) of one row, with the one replica rule (``treatment.replica_basis``
  → :func:`htsr.spectral.randomize.replica_count`) and the generator
  ``default_rng([seed, layer_id, slice_id])``.

BLAS is pinned with :func:`htsr.blas.blas_single_thread` around all of them.
"""

from __future__ import annotations

import numpy as np

from .config import AnalysisConfig
from .matrices import Geometry, as_float, slices
from .sources.base import WeightTensor
from .spectral.esd import ESD, top_esd
from .spectral.randomize import RandomizedESD, randomized_esd, replica_count, shuffled_spectra
from .spectral.traps import TrapSearch, find_traps
from .treatment import Treatment


def read_matrix(t: WeightTensor) -> tuple[np.ndarray, str]:
    """The tensor's values as a float64 copy and a note on any conversion (:func:`htsr.matrices.as_float`)."""
    return as_float(t.load(), t.where)


def layer_stack(W: np.ndarray, t: WeightTensor, g: Geometry, config: AnalysisConfig,
                treatment: Treatment) -> tuple[np.ndarray, bool]:
    """The layer's matrices (rf, rows, cols) and whether its ESD keeps only the top M values.

    A kernel the treatment reads whole (the reference's Conv1d) comes back as stored.
    """
    top_m = treatment.top_m(t.layer_type, W.ndim)
    if top_m:
        return W, True
    return slices(W, t.layer_type, config.conv2d_norm, treatment.conv2d_factor(g, config.pool)), False


def row_esd(esd: ESD, g: Geometry, top_m: bool) -> ESD:
    """A row's ESD: the M largest eigenvalues only when :func:`layer_stack` said so."""
    return top_esd(esd.evals, g.M, g.N) if top_m else esd


def row_key(seed: int, layer_id: int, slice_id: int | None) -> tuple[int, int, int]:
    """The generator key of a row's shuffles: ``(seed, layer_id, slice_id or 0)``."""
    return (seed, layer_id, slice_id or 0)


def early_spectra(sub: np.ndarray, g: Geometry, n_evals: int, seed: int, layer_id: int, slice_id: int | None,
                  treatment: Treatment) -> tuple[int, tuple]:
    """The row's shuffled spectra (:func:`htsr.spectral.randomize.shuffled_spectra`) before its own ESD is known.

    ``n_evals`` is the row's expected eigenvalue count (it sets the number of replicas); returns
    ``(replicas, spectra)`` for :func:`randomize_row`'s ``early``, which uses them only when the
    ESD's actual count gives the same number of replicas.
    """
    replicas = replica_count(treatment.replica_basis(g, n_evals))
    return replicas, shuffled_spectra(sub, row_key(seed, layer_id, slice_id), replicas)


def shuffle_row(sub: np.ndarray, evals: np.ndarray, g: Geometry, seed: int, layer_id: int,
                slice_id: int | None, treatment: Treatment,
                early: tuple[int, tuple] | None = None) -> tuple[RandomizedESD, np.ndarray]:
    """The randomized ESD of one row and its shuffled matrices (see :func:`htsr.spectral.randomize.randomized_esd`).

    ``early``: :func:`early_spectra` of this row, used when its number of replicas is right.
    """
    replicas = replica_count(treatment.replica_basis(g, evals.size))
    spectra = early[1] if early is not None and early[0] == replicas else None
    return randomized_esd(sub, evals, g.Q, g.M, row_key(seed, layer_id, slice_id), replicas, spectra=spectra)


def randomize_row(sub: np.ndarray, evals: np.ndarray, g: Geometry, seed: int, layer_id: int,
                  slice_id: int | None, treatment: Treatment,
                  early: tuple[int, tuple] | None = None) -> tuple[RandomizedESD, TrapSearch]:
    """:func:`shuffle_row` and the correlation-trap search on its shuffles."""
    randomized, shuffled = shuffle_row(sub, evals, g, seed, layer_id, slice_id, treatment, early)
    traps = find_traps(sub, shuffled, randomized, row_key(seed, layer_id, slice_id))
    del shuffled
    return randomized, traps
