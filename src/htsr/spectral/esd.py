"""Eigenvalues of X = WᵀW (the empirical spectral density) and the rank numbers.

Eigenvalues are the squared singular values of W, not divided by N. The
default route forms the M×M Gram matrix in float64 and calls the symmetric
eigensolver (LAPACK ``syevd``; two-stage ``syevd_2stage`` from M = 2048 when
numpy's OpenBLAS has it); it agrees with the SVD to ~1e-14 relative on
the large eigenvalues. numpy's ``w.T @ w`` with one operand the transpose of
the other is a symmetric rank-k product (BLAS ``syrk``: half the flops of a
general product), and numpy's matmul and ``eigvalsh`` release the GIL, so the
engine can run two layers on two threads (scipy's LAPACK wrappers hold it).

The Gram route resolves every eigenvalue to an absolute error of a few
ε·λ_max. Measured on matrices with planted spectra, the relative error of
``sv_min`` = √λ_min is 2e-8 at λ_min/λ_max = 1e-10, 1.3e-7 at 1e-11, 3e-7 at
1e-12 and 4e-4 at 1e-14; the rank tolerance (s_max·N·ε)² ≤ 1.2e-22·λ_max lies far
below. So a slice with λ_min/λ_max above ``GRAM_SAFE_RATIO`` = 1e-11 keeps
the Gram eigenvalues (its rank numbers are exact, ``sv_min`` within ~1e-6),
and a nearly rank-deficient one falls back to the SVD. (The threshold matters
for speed: about one square 4096² Gaussian matrix in four has a ratio below
1e-9, one in forty below 1e-11, and an SVD costs several Gram routes.)

``fast=True`` (opt-in, never the default) forms the Gram matrix and solves it
in float32 and keeps the result (no fallback unless the slice is all zero):
the large eigenvalues, hence alpha, move by ~1e-7 relative, but eigenvalues
below ~1e-7·λmax are float32 noise, so ``sv_min`` and the rank columns are
not reliable there. The measured error is in ``benchmarks/README.md``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)

GRAM_SAFE_RATIO = 1e-11
TWO_STAGE_MIN = 2048


@dataclass(frozen=True)
class ESD:
    """Eigenvalues of one layer (all slices pooled) and the per-slice numbers.

    Attributes
    ----------
    evals : ndarray, shape (M·rf,)
        Sorted ascending, float64.
    sv_max, sv_min : float
        Largest singular value; the largest of the slices' smallest singular values.
    rank_loss : int
        Σ over slices of #singular values − #{s > s_max·N·ε}.
    """

    evals: np.ndarray
    sv_max: float
    sv_min: float
    rank_loss: int


def gram(w: np.ndarray) -> np.ndarray:
    """The smaller Gram matrix of ``w`` (rows, cols) or of each matrix of a stack (rf, rows, cols).

    Uses ``w.T @ w`` when rows ≥ cols, else ``w @ w.T``, in ``w``'s dtype.
    """
    wt = np.swapaxes(w, -1, -2)
    return wt @ w if w.shape[-2] >= w.shape[-1] else w @ wt


@functools.cache
def _two_stage(dtype: str) -> Callable[[np.ndarray, np.ndarray], None] | None:
    """LAPACK's two-stage ``syevd`` (values only) from the OpenBLAS that numpy ships, or None.

    numpy's wheels bundle OpenBLAS with LAPACKE, whose ``?syevd_2stage``
    reduces to a band matrix with BLAS-3 and then to tridiagonal form, instead
    of the memory-bound BLAS-2 half of the one-stage reduction: measured 1.5×
    faster at 4096² on one core, the same at 2048². Called through ctypes,
    which releases the GIL. Any other numpy build gets None (and ``eigvalsh``).
    """
    import ctypes

    from ..blas import numpy_openblas

    letter = "d" if dtype == "float64" else "s"
    for path, lib in numpy_openblas():
        for name, int_t in ((f"scipy_LAPACKE_{letter}syevd_2stage64_", ctypes.c_int64),
                            (f"LAPACKE_{letter}syevd_2stage64_", ctypes.c_int64)):
            fn = getattr(lib, name, None)
            if fn is None:
                continue
            fn.restype = int_t
            fn.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_char, int_t, ctypes.c_void_p, int_t, ctypes.c_void_p]

            def solve(x: np.ndarray, out: np.ndarray, _fn: Any = fn) -> None:
                # x is symmetric and C-ordered: read column-major it is the same matrix (destroyed)
                info = _fn(102, b"N", b"L", x.shape[0], x.ctypes.data, x.shape[0], out.ctypes.data)
                if info != 0:
                    raise np.linalg.LinAlgError(f"syevd_2stage failed (info={info})")

            if _agrees_with_eigvalsh(solve, dtype):
                return solve
            _log.debug("%s in %s gives wrong eigenvalues on a test matrix; using numpy.linalg.eigvalsh", name, path)
            return None
    _log.debug("no two-stage syevd in numpy's OpenBLAS; using numpy.linalg.eigvalsh")
    return None


def _agrees_with_eigvalsh(solve: Callable[[np.ndarray, np.ndarray], None], dtype: str) -> bool:
    """Check a found ``syevd_2stage`` once against ``numpy.linalg.eigvalsh`` on a small Gram matrix."""
    w = np.random.default_rng(0).standard_normal((80, 48)).astype(dtype)
    x = np.ascontiguousarray(w.T @ w)
    want = np.linalg.eigvalsh(x)
    got = np.empty(x.shape[0], dtype=x.dtype)
    try:
        solve(x.copy(), got)
    except np.linalg.LinAlgError:
        return False
    tol = 1e-4 if dtype == "float32" else 1e-10
    return bool(np.allclose(got, want, rtol=tol, atol=tol * float(want[-1])))


def eigvalsh_gram(x: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of a stack of Gram matrices (B, M, M) that may be overwritten.

    Large matrices (M ≥ ``TWO_STAGE_MIN``) use the two-stage reduction when numpy's OpenBLAS
    provides it; otherwise ``numpy.linalg.eigvalsh`` (LAPACK ``syevd``).
    """
    m = x.shape[-1]
    solve = _two_stage(x.dtype.name) if m >= TWO_STAGE_MIN and x.dtype in (np.float32, np.float64) else None
    if solve is None:
        return np.linalg.eigvalsh(x)
    out = np.empty(x.shape[:-1], dtype=x.dtype)
    for k in range(x.shape[0]):
        xk = np.ascontiguousarray(x[k])
        solve(xk, out[k])
    return out


def _checked(w: np.ndarray, ev: np.ndarray, fast: bool = False) -> np.ndarray:
    """``ev`` as float64, or the float64 SVD's squares when the Gram route cannot resolve the slice.

    With ``fast`` the float32 values are kept unless the slice is all zero.
    """
    top = ev[-1] if ev.size else 0.0
    if top <= 0 or (not fast and ev[0] <= top * GRAM_SAFE_RATIO):
        sv = np.linalg.svd(w.astype(np.float64, copy=False), compute_uv=False)
        return np.sort(sv * sv)
    return ev.astype(np.float64, copy=False)


def rank_count(sv: np.ndarray, N: int) -> int:
    """#{s > s_max·N·ε}, ε the machine epsilon of ``sv``'s dtype."""
    if sv.size == 0:
        return 0
    tol = np.max(sv) * N * np.finfo(sv.dtype).eps
    return int(np.count_nonzero(sv > tol))


def esd_from_slices(stack: np.ndarray, ev: np.ndarray, N: int, fast: bool = False) -> ESD:
    """Pool per-slice Gram eigenvalues ``ev`` (rf, M) of ``stack`` into an ESD, with the SVD fallback."""
    all_evals = []
    sv_max = 0.0
    sv_min = 0.0
    rank_loss = 0
    for k in range(stack.shape[0]):
        e = np.clip(_checked(stack[k], ev[k], fast), 0.0, None)
        sv = np.sqrt(e)
        sv_max = max(sv_max, float(sv[-1]))
        sv_min = max(sv_min, float(sv[0]))
        rank_loss += sv.size - rank_count(sv, N)
        all_evals.append(e)
    evals = np.sort(np.concatenate(all_evals)) if len(all_evals) > 1 else all_evals[0]
    return ESD(evals=evals, sv_max=sv_max, sv_min=sv_min, rank_loss=rank_loss)


def compute_esd(stack: np.ndarray, N: int, fast: bool = False) -> ESD:
    """ESD of a stack of matrices (rf, rows, cols), pooled.

    Parameters
    ----------
    stack : ndarray, shape (rf, rows, cols)
        The layer's matrices (one for a dense layer), any float dtype.
    N : int
        The layer's larger dimension (for the rank tolerance).
    fast : bool
        Gram matrix and eigensolver in float32 (approximate; opt-in).

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag([3.0, 2.0, 1.0])
    >>> compute_esd(W[None], N=3).evals
    array([1., 4., 9.])
    """
    dtype = np.float32 if fast else np.float64
    w = stack.astype(dtype, copy=False)
    ev = eigvalsh_gram(gram(w[0])[None] if w.shape[0] == 1 else gram(w))
    return esd_from_slices(stack, ev, N, fast)


def top_esd(evals: np.ndarray, count: int, N: int, sv_max: float | None = None) -> ESD:
    """The ESD of the ``count`` largest of the sorted ``evals`` alone: the one top-k rule.

    ``sv_min`` and ``rank_loss`` (rank tolerance of a matrix of larger side ``N``)
    are those of the kept singular values √λ, as a truncated SVD gives them;
    ``sv_max`` too unless given (a PEFT row keeps its matrix's own). Used for the
    reference's Conv1d kernels, PEFT rows (``num_components``), ``stacked`` and
    ``intra`` rows.

    Examples
    --------
    >>> import numpy as np
    >>> e = top_esd(compute_esd(np.diag([3.0, 2.0, 1.0])[None], N=3).evals, 2, N=3)
    >>> e.evals, e.sv_min
    (array([4., 9.]), 2.0)
    """
    kept = evals[-count:] if count > 0 else evals[:0]
    sv = np.sqrt(kept)
    top = (float(sv[-1]) if sv.size else 0.0) if sv_max is None else sv_max
    return ESD(evals=kept, sv_max=top, sv_min=float(sv[0]) if sv.size else 0.0,
               rank_loss=int(sv.size - rank_count(sv, N)))
