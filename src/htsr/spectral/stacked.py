"""``stacked=True``: every analyzed layer in one matrix, as the reference builds it.

Each layer contributes one matrix: a dense weight as stored (out × in); a conv
weight's kernel-position slices, each oriented with its larger side first,
side by side (N × M·rf). Each matrix is standardized robustly — minus the
median of all its entries, divided by the median absolute deviation of *each
column* (the reference's ``scipy.stats.median_abs_deviation`` default, axis 0) —
padded with zero columns to the widest, and the matrices are stacked
vertically (transposed if that leaves more columns than rows). The stacked
matrix is analyzed as one layer (``rf = 1``) but keeps only as many of its
largest eigenvalues as the *first* layer has (the reference's ``n_comp``).
"""

from __future__ import annotations

import numpy as np


def reference_matrix(array: np.ndarray) -> np.ndarray:
    """One layer's matrix for the stack: dense as stored; conv slices (each larger side first) side by side."""
    W = np.asarray(array, dtype=np.float64)
    if W.ndim == 2:
        return W
    out, inp = W.shape[:2]
    taps = [W[(slice(None), slice(None)) + idx] for idx in np.ndindex(*W.shape[2:])]  # noqa: RUF005 - a starred subscript reads as 3.11 syntax to mypy
    taps = [t.T if out < inp else t for t in taps]
    return np.hstack(taps)


def stack_matrices(mats: list[np.ndarray]) -> np.ndarray:
    """The reference's stacked matrix of the layers' matrices (see the module docstring).

    Examples
    --------
    >>> a = np.arange(6.0).reshape(2, 3); b = np.arange(8.0).reshape(4, 2)
    >>> stack_matrices([a, b]).shape
    (6, 3)
    """
    if not mats:
        raise ValueError("no layer to stack")
    width = max(int(m.shape[1]) for m in mats)
    parts = []
    for m in mats:
        m = np.asarray(m, dtype=np.float64)
        center = m - np.median(m)
        mad = np.median(np.abs(m - np.median(m, axis=0)), axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = center / mad
        parts.append(np.pad(z, ((0, 0), (0, width - m.shape[1]))))
    stacked = np.vstack(parts)
    return stacked.T if stacked.shape[0] < stacked.shape[1] else stacked
