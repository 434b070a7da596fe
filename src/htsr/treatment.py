"""How a layer's weights become the rows htsr reports: the :class:`Treatment` protocol.

htsr's own rules are :data:`HTSR` (an :class:`HtsrTreatment`). The reference tool
(weightwatcher 0.7.7) treats some layers differently; its rules live in
:class:`htsr.compat.ReferenceTreatment`, which the compat class hands to the
engine. The core (this module, the engine, the transforms) only ever calls the
methods below, never asks *which* treatment it holds, and never imports
:mod:`htsr.compat`: a new reference quirk is one method (or attribute) here, its
htsr value in :class:`HtsrTreatment` and the reference's in ``compat/treatment.py``.

Every treatment decides:

=======================  ===================================================
``geometry``             N, M, rf (and the eigenvalue count) of a tensor
``gate_count``           the eigenvalue count ``min_evals`` / ``max_evals`` gate
``conv2d_factor``        the factor conv2d slices are scaled by (``conv2d_norm``)
``top_m``                whether a layer's ESD is cut to its M largest values
``row_groups``           the rows one layer gives: pooled, or one per slice
``row_identity``         ``rf`` / ``num_evals`` of a row
``replica_basis``        the count :func:`htsr.spectral.randomize.replica_count` sees
``small_n``              fits below this many eigenvalues use the small-sample search
``needs_all_elements``   a large layer is decoded whole (no block-summed Gram)
``reference_ids``        rows numbered as the reference numbers them (ONNX)
``failed_fit_value``     alpha, D, xmin of a failed fit (NaN: htsr's convention; the status stays 'failed')
=======================  ===================================================
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from .config import LayerType
from .matrices import Geometry, geometry

#: One row's slice id (None: the pooled row) and its stack of matrices (rf, rows, cols).
RowGroup = tuple["int | None", np.ndarray]


class Treatment(Protocol):
    """What the engine asks about a layer; see the module docstring for each member."""

    name: str
    small_n: int
    needs_all_elements: bool
    reference_ids: bool
    failed_fit_value: float

    def geometry(self, shape: tuple[int, ...], layer_type: LayerType) -> Geometry | None: ...

    def gate_count(self, g: Geometry, pool: bool) -> tuple[str, int]: ...

    def conv2d_factor(self, g: Geometry, pool: bool) -> float: ...

    def top_m(self, layer_type: LayerType, ndim: int) -> bool: ...

    def row_groups(self, stack: np.ndarray, pool: bool, top_m: bool) -> list[RowGroup]: ...

    def row_identity(self, ident: dict[str, Any], g: Geometry, n_evals: int) -> dict[str, Any]: ...

    def replica_basis(self, g: Geometry, n_evals: int) -> int: ...


class HtsrTreatment:
    """htsr's own treatment: every layer by the same rules (``docs/compat.md`` says why each differs).

    Examples
    --------
    >>> HTSR.geometry((32, 64, 2, 2), LayerType.CONV2D)
    Geometry(N=64, M=32, rf=4, evals=0)
    >>> HTSR.gate_count(HTSR.geometry((32, 64, 3, 3), LayerType.CONV2D), pool=False)
    ('M·rf', 288)
    """

    name = "htsr"
    small_n = 0  # one estimator for every layer size
    needs_all_elements = False
    reference_ids = False
    failed_fit_value = float("nan")

    def geometry(self, shape: tuple[int, ...], layer_type: LayerType) -> Geometry | None:
        """N (larger side), M (smaller side) and rf (slices) of the stored tensor."""
        return geometry(shape)

    def gate_count(self, g: Geometry, pool: bool) -> tuple[str, int]:
        """The layer's M·rf eigenvalues, pooled or not."""
        return "M·rf", g.M * g.rf

    def conv2d_factor(self, g: Geometry, pool: bool) -> float:
        """√½ for every conv2d slice, pooled or not: a slice's ESD stays comparable with the pooled one."""
        return math.sqrt(0.5)

    def top_m(self, layer_type: LayerType, ndim: int) -> bool:
        """Never: a Conv1d kernel is one out × in matrix per tap, like conv2d."""
        return False

    def row_groups(self, stack: np.ndarray, pool: bool, top_m: bool) -> list[RowGroup]:
        """One pooled row, or one row per slice with ``pool=False`` (a single matrix keeps no slice id)."""
        if pool or stack.shape[0] == 1:
            return [(None, stack)]
        return [(i, stack[i:i + 1]) for i in range(stack.shape[0])]

    def row_identity(self, ident: dict[str, Any], g: Geometry, n_evals: int) -> dict[str, Any]:
        """As computed: a per-slice row holds one matrix (rf = 1) and M eigenvalues."""
        return ident

    def replica_basis(self, g: Geometry, n_evals: int) -> int:
        """The row's eigenvalue count: what the randomized fit sees."""
        return n_evals


#: htsr's own treatment, the default of :func:`htsr.analyze`.
HTSR = HtsrTreatment()
