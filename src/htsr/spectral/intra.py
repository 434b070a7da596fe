"""``intra=True``: correlations *between* consecutive layers, as the reference computes them.

For two consecutive analyzed layers with weight matrices W0 (previous) and W1
(current) — the first kernel position of a conv layer, oriented N × M — the
reference forms the normalized product

    X = W0' · W1' / (‖W0‖_F ‖W1‖_F)                       (``sparsify=False``)
    X = W0' · S · W1' / (‖W0‖_F ‖W1‖_F + √‖S‖_F)           (``sparsify=True``)

where W0', W1' are W0, W1 transposed as needed so that they share their inner
dimension s (the larger of the dimensions the two shapes have in common), and
S is a random s × s matrix of 0/1 entries standing for a ReLU between the
layers (htsr draws it from the run's ``seed``; the reference's is unseeded).
A pair without a common dimension gives no row. When the current layer is a
conv2d layer, X is multiplied by √(1/2) (the reference's ``conv2d_norm``).

The row is then analyzed like a layer, except that its "eigenvalues" are the
singular values of X themselves (not their squares) — and the singular-value
columns are their square roots: ``sv_max = √max σ(X)``, ``rank_loss`` from
√σ(X).
"""

from __future__ import annotations

import numpy as np

from .esd import ESD, top_esd


def reference_slice(array: np.ndarray) -> np.ndarray:
    """The matrix the reference pairs: a dense weight as stored; a conv weight's first kernel position, N × M."""
    W = np.asarray(array, dtype=np.float64)
    if W.ndim == 2:
        return W
    first = W[(slice(None), slice(None)) + (0,) * (W.ndim - 2)]
    return first.T if first.shape[0] < first.shape[1] else first


def align_pair(W0: np.ndarray, W1: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """W0, W1 transposed so that ``W0.shape[1] == W1.shape[0]`` (the shared dimension), or None.

    Examples
    --------
    >>> a, b = align_pair(np.ones((64, 100)), np.ones((48, 64)))
    >>> a.shape, b.shape
    ((100, 64), (64, 48))
    >>> align_pair(np.ones((3, 5)), np.ones((7, 11))) is None
    True
    """
    shapes = [W0.shape[0], W0.shape[1], W1.shape[0], W1.shape[1]]
    rest = list(shapes)
    for value in set(shapes):
        rest.remove(value)
    if rest:
        shared = max(rest)
        if W0.shape[1] != shared:
            W0 = W0.T
        if W1.shape[0] != shared:
            W1 = W1.T
    if W0.shape[1] != W1.shape[0]:
        return None
    return W0, W1


def intra_matrix(W0: np.ndarray, W1: np.ndarray, sparsify: bool = False,
                 rng: np.random.Generator | None = None) -> np.ndarray | None:
    """The normalized product X of two aligned-able matrices (see the module docstring), or None."""
    pair = align_pair(np.asarray(W0, dtype=np.float64), np.asarray(W1, dtype=np.float64))
    if pair is None:
        return None
    A, B = pair
    norm = np.linalg.norm(A) * np.linalg.norm(B)
    if sparsify:
        rng = rng if rng is not None else np.random.default_rng(0)
        s = B.shape[0]
        S = rng.integers(0, 2, size=(s, s)).astype(np.float64)
        norm = norm + np.sqrt(np.linalg.norm(S))
        return (A @ S @ B) / norm
    return (A @ B) / norm


def intra_esd(X: np.ndarray, N: int, n_comp: int) -> ESD:
    """The reference's ESD of an intra-layer product: the top ``n_comp`` singular values of X as eigenvalues.

    Examples
    --------
    >>> esd = intra_esd(np.diag([4.0, 1.0]), N=2, n_comp=2)
    >>> esd.evals.tolist(), esd.sv_max
    ([1.0, 4.0], 2.0)
    """
    return top_esd(np.sort(np.linalg.svd(np.asarray(X, dtype=np.float64), compute_uv=False)), n_comp, N)
