"""The reference's treatment of a layer: :class:`ReferenceTreatment`, every way its numbers differ from htsr's.

weightwatcher 0.7.7 treats some layers differently from htsr (``docs/compat.md``,
"``htsr.analyze`` and the compat class" says why htsr's own rule differs in each
case). :class:`htsr.compat.WeightWatcher` hands :data:`REFERENCE` to the engine;
``htsr.analyze(model, treatment=REFERENCE, min_evals=REFERENCE.min_evals)`` gives
the same rows. A new reference quirk goes here: a member of the protocol in
:mod:`htsr.treatment` (htsr's value in ``HtsrTreatment``), the reference's value below.

==========================  ======================================================
quirk                       member
==========================  ======================================================
small-sample fit (n < 20)   ``small_n`` = 20 (:func:`htsr.spectral.powerlaw.small_sample_search`)
``min_evals`` default 8     ``min_evals`` (the compat class's default)
``pool=False`` slices       ``conv2d_factor`` √(rf/2), ``gate_count`` M, ``row_identity`` rf kept,
                            ``row_groups`` slice id 0 on single-matrix rows
Conv1d kernels              ``geometry`` (N = max, M = min of the 3 sides, rf = 1), ``top_m``
even conv2d kernels         ``geometry``: N and M swapped when out < in
replica count               ``replica_basis``: the layer's M·rf
ONNX layer ids              ``reference_ids`` (:func:`htsr.sources.open_source`)
failed fits                 ``failed_fit_value``: the reference writes −1; htsr keeps NaN and
                            ``status='failed'`` in the compat class too (a deliberate fix)
==========================  ======================================================
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..config import LayerType
from ..matrices import Geometry, geometry
from ..spectral.powerlaw import SMALL_N
from ..treatment import HtsrTreatment, RowGroup
from .constants import DEFAULT_MIN_EVALS, ERROR


def reference_geometry(shape: tuple[int, ...], layer_type: LayerType) -> Geometry | None:
    """N, M, rf as the reference reports them (None for tensors that are not matrices).

    Differs from :func:`htsr.matrices.geometry` in two cases:

    - a 3-D Conv1d kernel (out, in, k) is one "matrix": N = max(out, in, k),
      M = min(out, in, k), rf = 1, and its eigenvalues are the squares of the M
      largest singular values of the (in, k) matrices of all outputs (the
      kernel read as a stack; :func:`htsr.spectral.esd.top_esd`);
    - a conv2d kernel with fewer outputs than inputs and an even number of
      kernel positions: the reference swaps N and M once per position, so an
      even count leaves N = out (the smaller side) and M = in; the eigenvalues
      are still min(out, in)·rf.

    Examples
    --------
    >>> reference_geometry((32, 16, 3), LayerType.CONV1D)
    Geometry(N=32, M=3, rf=1, evals=3)
    >>> reference_geometry((32, 64, 2, 2), LayerType.CONV2D)
    Geometry(N=32, M=64, rf=4, evals=128)
    """
    g = geometry(shape)
    if g is None:
        return None
    if layer_type is LayerType.CONV1D and len(shape) == 3:
        return Geometry(N=max(shape), M=min(shape), rf=1, evals=min(shape))
    if layer_type is LayerType.CONV2D and len(shape) == 4 and shape[0] < shape[1] and g.rf % 2 == 0:
        return Geometry(N=shape[0], M=shape[1], rf=g.rf, evals=shape[0] * g.rf)
    return g


def reference_conv2d_factor(rf: int, pooled: bool) -> float:
    """Factor the reference multiplies conv2d slices by under ``conv2d_norm``: √½ pooled, √(rf/2) per slice (``pool=False``)."""
    return math.sqrt(0.5) if pooled else math.sqrt(rf / 2.0)


class ReferenceTreatment(HtsrTreatment):
    """weightwatcher 0.7.7's treatment (see the module docstring for the list).

    Examples
    --------
    >>> REFERENCE.gate_count(reference_geometry((32, 64, 3, 3), LayerType.CONV2D), pool=False)
    ('M', 32)
    >>> REFERENCE.replica_basis(Geometry(N=64, M=32, rf=9), n_evals=32)
    288
    """

    name = "reference"
    small_n = SMALL_N
    needs_all_elements = True  # the Conv1d and per-slice routes need the whole tensor
    reference_ids = True
    #: The reference writes ERROR (−1) for alpha, D and xmin of a failed fit; htsr keeps NaN (docs/compat.md).
    reference_failed_value = float(ERROR)
    failed_fit_value = float("nan")
    #: The reference's default ``min_evals``; 0 (or None) means no limit in its arguments.
    min_evals = DEFAULT_MIN_EVALS

    def geometry(self, shape: tuple[int, ...], layer_type: LayerType) -> Geometry | None:
        """:func:`reference_geometry`."""
        return reference_geometry(shape, layer_type)

    def gate_count(self, g: Geometry, pool: bool) -> tuple[str, int]:
        """With ``pool=False`` each slice's M is gated (the whole layer goes); pooled, M·rf."""
        return ("M", g.M) if not pool else ("M·rf", g.M * g.rf)

    def conv2d_factor(self, g: Geometry, pool: bool) -> float:
        """:func:`reference_conv2d_factor`."""
        return reference_conv2d_factor(g.rf, pool)

    def top_m(self, layer_type: LayerType, ndim: int) -> bool:
        """A 3-D Conv1d kernel: one (in, k) matrix per output, its top M eigenvalues kept."""
        return layer_type is LayerType.CONV1D and ndim == 3

    def row_groups(self, stack: np.ndarray, pool: bool, top_m: bool) -> list[RowGroup]:
        """Every row has a ``slice_id`` with ``pool=False`` (0 for a single matrix or a Conv1d kernel)."""
        if pool:
            return [(None, stack)]
        if top_m:
            return [(0, stack)]
        return [(i, stack[i:i + 1]) for i in range(stack.shape[0])]

    def row_identity(self, ident: dict[str, Any], g: Geometry, n_evals: int) -> dict[str, Any]:
        """Slice rows keep the layer's rf; ``num_evals`` counts the eigenvalues kept."""
        return dict(ident, rf=g.rf, num_evals=int(n_evals))

    def replica_basis(self, g: Geometry, n_evals: int) -> int:
        """The layer's M·rf, also for each ``pool=False`` slice."""
        return g.M * g.rf


#: The reference's treatment, as :class:`htsr.compat.WeightWatcher` uses it.
REFERENCE = ReferenceTreatment()
