"""Eigenvalues of X = WᵀW (the empirical spectral density) and the rank numbers.

Eigenvalues are the squared singular values of W, not divided by N. The
default route forms the M×M Gram matrix with a symmetric rank-k product
(BLAS ``syrk``: half the flops of a general product) and calls the symmetric
eigensolver; it agrees with the SVD to ~1e-14 relative on the large
eigenvalues. When a slice is nearly rank-deficient (λ_min/λ_max below
``GRAM_SAFE_RATIO``) the Gram route cannot resolve its small singular values,
so that slice falls back to the SVD and the rank numbers stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRAM_SAFE_RATIO = 1e-9


@dataclass(frozen=True)
class ESD:
    """Eigenvalues of one layer (all slices pooled) and the per-slice numbers.

    Attributes
    ----------
    evals : ndarray, shape (M·rf,)
        Sorted ascending.
    sv_max, sv_min : float
        Largest singular value; the largest of the slices' smallest singular values.
    rank_loss : int
        Σ over slices of #singular values − #{s > s_max·N·ε}.
    """

    evals: np.ndarray
    sv_max: float
    sv_min: float
    rank_loss: int


def _gram(w: np.ndarray) -> np.ndarray:
    """Upper triangle of the smaller Gram matrix of ``w`` (float64)."""
    from scipy.linalg.blas import dsyrk, ssyrk

    syrk = dsyrk if w.dtype == np.float64 else ssyrk
    rows, cols = w.shape
    wc = np.ascontiguousarray(w)
    # a C-ordered (rows, cols) array is the Fortran-ordered transpose (cols, rows)
    if rows >= cols:
        return syrk(1.0, wc.T, trans=0)  # (cols×rows)(rows×cols) = WᵀW
    return syrk(1.0, wc.T, trans=1)  # (rows×cols)(cols×rows) = WWᵀ


def slice_singular_values_sq(w: np.ndarray) -> np.ndarray:
    """Squared singular values (ascending) of one matrix via the Gram route, SVD fallback."""
    from scipy.linalg import eigvalsh

    x = _gram(w)
    ev = eigvalsh(x, lower=False, overwrite_a=True, check_finite=False)
    top = ev[-1] if ev.size else 0.0
    if top <= 0 or ev[0] <= top * GRAM_SAFE_RATIO:
        sv = np.linalg.svd(w.astype(np.float64, copy=False), compute_uv=False)
        return np.sort(sv * sv)
    return ev


def rank_count(sv: np.ndarray, N: int) -> int:
    """#{s > s_max·N·ε}, ε the machine epsilon of ``sv``'s dtype."""
    if sv.size == 0:
        return 0
    tol = np.max(sv) * N * np.finfo(sv.dtype).eps
    return int(np.count_nonzero(sv > tol))


def compute_esd(stack: np.ndarray, N: int) -> ESD:
    """ESD of a stack of matrices (rf, rows, cols), pooled.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag([3.0, 2.0, 1.0])
    >>> compute_esd(W[None], N=3).evals
    array([1., 4., 9.])
    """
    all_evals = []
    sv_max = 0.0
    sv_min = 0.0
    rank_loss = 0
    for w in stack:
        ev = np.clip(slice_singular_values_sq(w), 0.0, None)
        sv = np.sqrt(ev)
        sv_max = max(sv_max, float(sv[-1]))
        sv_min = max(sv_min, float(sv[0]))
        rank_loss += sv.size - rank_count(sv, N)
        all_evals.append(ev)
    evals = np.sort(np.concatenate(all_evals)) if len(all_evals) > 1 else all_evals[0]
    return ESD(evals=evals, sv_max=sv_max, sv_min=sv_min, rank_loss=rank_loss)
