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
eigenvalues. The reference's (weightwatcher 0.7.7) geometry and slice scaling,
where they differ, are in :mod:`htsr.compat.treatment` (``docs/compat.md``).
Arrays are checked here: NaN/Inf, complex or empty weights raise
:class:`~htsr.errors.LayerError` with a reason the report shows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from .config import LayerType
from .errors import LayerError

#: The end of an all-zero layer's reason (a fine-tune's W − W_base is reported "unchanged from base" by it).
ALL_ZERO = "all entries are zero"


@dataclass(frozen=True)
class Geometry:
    """N (larger side), M (smaller side) and rf (number of slices) of a layer.

    ``evals`` is the number of eigenvalues when it is not M·rf (only in the
    reference's geometry, :func:`htsr.compat.treatment.reference_geometry`).
    """

    N: int
    M: int
    rf: int
    evals: int = 0

    @property
    def Q(self) -> float:
        return self.N / self.M if self.M else float("nan")

    @property
    def num_evals(self) -> int:
        return self.evals or self.M * self.rf


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
    """Float64 copy of ``array`` and a note on any conversion; LayerError when it cannot be analyzed.

    The checks are :func:`check_weights`; the copy is made once, after they pass.
    """
    src, note = check_weights(array, where)
    return np.array(src, dtype=np.float64, copy=True), note


def check_weights(array: np.ndarray, where: str) -> tuple[np.ndarray, str]:
    """``array`` (as stored, or widened to float32 for ml_dtypes) and a note, after checking it can be analyzed.

    ========================================  =========================================
    weights                                   outcome
    ========================================  =========================================
    float16/32/64 (bfloat16, float8 decoded)  analyzed
    bool, int8, uint8 … (quantized)           analyzed as floats, noted in ``reason``
    complex, object, str, datetime, records   ``invalid: complex values`` / ``unsupported dtype``
    NaN or Inf entries                        ``invalid: 12 NaN entries``
    all zero                                  ``invalid: all entries are zero``
    entries so large WᵀW overflows float64    ``invalid: entries up to … overflow``
    ========================================  =========================================

    Constant and rank-one matrices are valid: they are analyzed, and their
    power-law fit fails (one eigenvalue), giving status ``failed``.

    Examples
    --------
    >>> check_weights(np.array([[1, 2], [3, 4]], dtype=np.int8), "w")[1]
    'int8 weights analyzed as floats'
    >>> as_float(np.array([[1, 2], [3, 4]], dtype=np.int8), "w")
    (array([[1., 2.],
           [3., 4.]]), 'int8 weights analyzed as floats')
    """
    note = ""
    dtype = np.asarray(array).dtype if not isinstance(array, np.ndarray) else array.dtype
    if dtype.kind == "c":
        raise LayerError(f"invalid: complex values ({dtype}) in {where}")
    if dtype.kind in "biu":
        note = f"{dtype.name} weights analyzed as floats"
    elif dtype.kind != "f":
        if dtype.kind == "V" and dtype.names is None:  # ml_dtypes bfloat16 / float8 arrays
            try:
                array = np.asarray(array).astype(np.float32)
            except (TypeError, ValueError):
                raise LayerError(f"invalid: unsupported dtype {dtype} in {where}") from None
        else:
            raise LayerError(f"invalid: unsupported dtype {dtype} in {where}")
    src = np.asarray(array)
    # One pass each for min and max on the stored dtype (no temporaries): NaN propagates into both,
    # ±Inf shows as an extreme, all-zero is max = min = 0, and the peak bounds the overflow check.
    lo, hi = (float(src.min()), float(src.max())) if src.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise_nonfinite(*nonfinite_counts(src))
    check_range(lo, hi, src.size)
    return src, note


def nonfinite_counts(src: np.ndarray) -> tuple[int, int]:
    """Numbers of NaN and of ±Inf entries of ``src``."""
    return int(np.count_nonzero(np.isnan(src))), int(np.count_nonzero(np.isinf(src)))


def raise_nonfinite(nan: int, inf: int) -> None:
    """The LayerError of a matrix with ``nan`` NaN and ``inf`` Inf entries."""
    parts = ([f"{nan} NaN"] if nan else []) + ([f"{inf} Inf"] if inf else [])
    raise LayerError(f"invalid: {' and '.join(parts)} entries")


def check_range(lo: float, hi: float, size: int) -> None:
    """LayerError when finite weights in [lo, hi] (``size`` entries) are all zero or overflow WᵀW."""
    if size and lo == 0.0 and hi == 0.0:
        raise LayerError(f"invalid: {ALL_ZERO}")
    peak = max(abs(lo), abs(hi))
    if peak > np.sqrt(np.finfo(np.float64).max / max(size, 1)) * 1e-3:
        raise LayerError(f"invalid: entries up to {peak:.3g} overflow WᵀW in float64")


def work_bytes(shape: tuple[int, ...], itemsize: int = 8) -> int:
    """Bytes the eigenvalue work on one tensor needs at its peak (an upper estimate).

    The stored tensor, its float64 copy, the float64 slice stack, a spare
    float64 copy (SVD fallback or shuffle), and the M×M Gram matrix with the
    eigensolver's workspace.
    """
    geom = geometry(shape)
    count = math.prod(shape)
    if geom is None:
        return count * itemsize
    return count * itemsize + 3 * 8 * count + 3 * 8 * geom.M * geom.M


def available_memory() -> int | None:
    """Bytes of memory this process can still use, from the operating system (None if unknown).

    ``MemAvailable`` from ``/proc/meminfo`` (else ``sysconf``'s available
    pages), lowered to a cgroup v2 limit's headroom when one is set.
    """
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
            current = int(fh.read().strip())
        if limit.isdigit():
            avail = min(avail, max(int(limit) - current, 0))
    except (OSError, ValueError):
        pass
    return avail


def slices(array: np.ndarray, layer_type: LayerType, conv2d_norm: bool = True,
           factor: float = math.sqrt(0.5)) -> np.ndarray:
    """Stack of the layer's matrices, shape (rf, rows, cols), float64.

    Conv2d slices are multiplied by ``factor`` when ``conv2d_norm``.

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
            stack = stack * factor  # not in place: for a 1×1 kernel ``stack`` is a view of ``array``
        return stack
    raise LayerError(f"invalid: {array.ndim}-D tensor")


def unslice(stack: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`slices` (without the conv2d scale): the stored tensor of ``shape`` from its matrices.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.arange(2 * 3 * 2 * 2.0).reshape(2, 3, 2, 2)
    >>> bool(np.array_equal(unslice(slices(w, LayerType.CONV2D, conv2d_norm=False), w.shape), w))
    True
    """
    if len(shape) == 2:
        return stack[0]
    if len(shape) == 3:
        return np.moveaxis(stack, 0, 2)
    out, inp, kh, kw = shape
    return stack.reshape(kh, kw, out, inp).transpose(2, 3, 0, 1)


def stored_index(shape: tuple[int, ...], s: int, r: int, c: int) -> tuple[int, ...]:
    """Index in the stored tensor of entry (r, c) of slice ``s`` (the layout of :func:`slices`).

    Examples
    --------
    >>> stored_index((8, 4, 3, 3), 5, 2, 1)
    (2, 1, 1, 2)
    """
    if len(shape) == 2:
        return (r, c)
    if len(shape) == 3:
        return (r, c, s)
    return (r, c, s // shape[3], s % shape[3])
