"""From a weight tensor to the 2-D matrices whose spectra are analyzed.

================  ==================  ==========================================
layer             stored shape        matrices
================  ==================  ==========================================
dense, embedding  (out, in)           W as stored (one matrix, rf = 1)
GPT-2 Conv1D      (in, out)           W as stored (one matrix, rf = 1)
conv1d            (out, in, k)        one out×in slice per tap (rf = k)
conv2d            (out, in, kh, kw)   one out×in slice per kernel position
                                      (rf = kh·kw), times sqrt(1/2) when
                                      ``conv2d_norm`` (the reference's default)
================  ==================  ==========================================

N is the larger and M the smaller side of a slice; a layer has M·rf
eigenvalues. Arrays are checked here: NaN/Inf, complex or empty weights raise
:class:`~htsr.errors.LayerError` with a reason the report shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import LayerType
from .errors import LayerError


@dataclass(frozen=True)
class Geometry:
    """N (larger side), M (smaller side) and rf (number of slices) of a layer."""

    N: int
    M: int
    rf: int

    @property
    def Q(self) -> float:
        return self.N / self.M if self.M else float("nan")

    @property
    def num_evals(self) -> int:
        return self.M * self.rf


def geometry(shape: tuple[int, ...]) -> Geometry | None:
    """Geometry from a tensor shape; None for tensors that are not matrices (1-D, 0-D, 5-D+)."""
    if len(shape) < 2 or len(shape) > 4:
        return None
    rows, cols = shape[0], shape[1]
    rf = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return Geometry(N=max(rows, cols), M=min(rows, cols), rf=rf)


def not_a_matrix_reason(shape: tuple[int, ...], layer_type: LayerType) -> str | None:
    """Why a tensor is not analyzed at all (None when it is a matrix or conv kernel)."""
    if len(shape) < 2:
        return f"{len(shape)}-D tensor (biases, norms and scalars have no spectrum)"
    if len(shape) > 4:
        return f"{len(shape)}-D tensor (only 2-D matrices and conv kernels are analyzed)"
    if min(shape[:2]) == 0:
        return "empty tensor"
    return None


def as_float(array: np.ndarray, where: str) -> tuple[np.ndarray, str]:
    """Float64 copy of ``array`` and a note on any conversion; LayerError when it cannot be analyzed."""
    note = ""
    if np.iscomplexobj(array):
        raise LayerError(f"invalid: complex values ({array.dtype}) in {where}")
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        note = f"{array.dtype.name} weights analyzed as floats"
    elif not np.issubdtype(array.dtype, np.floating):
        try:
            array = array.astype(np.float32)
        except (TypeError, ValueError):
            raise LayerError(f"invalid: unsupported dtype {array.dtype} in {where}") from None
    out = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(out)
    if not finite.all():
        nan = int(np.isnan(out).sum())
        inf = int(out.size - finite.sum() - nan)
        parts = ([f"{nan} NaN"] if nan else []) + ([f"{inf} Inf"] if inf else [])
        raise LayerError(f"invalid: {' and '.join(parts)} entries")
    if out.size and not out.any():
        raise LayerError("invalid: all entries are zero")
    return out, note


def slices(array: np.ndarray, layer_type: LayerType, conv2d_norm: bool = True) -> np.ndarray:
    """Stack of the layer's matrices, shape (rf, rows, cols), float64.

    Examples
    --------
    >>> import numpy as np
    >>> slices(np.ones((8, 3, 3, 3)), LayerType.CONV2D).shape
    (9, 8, 3)
    """
    if array.ndim == 2:
        return array[None, :, :]
    if array.ndim == 3:  # (out, in, k): one slice per tap
        return np.ascontiguousarray(np.moveaxis(array, 2, 0))
    if array.ndim == 4:  # (out, in, kh, kw): one slice per kernel position, kh outer
        out, inp, kh, kw = array.shape
        stack = np.ascontiguousarray(array.transpose(2, 3, 0, 1).reshape(kh * kw, out, inp))
        if conv2d_norm and layer_type is LayerType.CONV2D:
            stack *= np.sqrt(0.5)
        return stack
    raise LayerError(f"invalid: {array.ndim}-D tensor")
