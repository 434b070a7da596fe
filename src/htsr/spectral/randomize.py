"""Elementwise shuffling of weight matrices and the randomized ESD.

Shuffling every element of a matrix (each conv slice within itself) destroys
all correlations between its rows and columns but keeps the multiset of its
values: its mean, variance and any unusually large elements. The ESD of the
shuffled matrix is a Marchenko–Pastur bulk plus, possibly, the outlier of a
non-zero mean and the spikes of large elements (correlation traps).

Randomness comes only from the ``numpy.random.Generator`` passed in. A slice is
shuffled with ``rng.shuffle`` on its flattened copy; :func:`permutations`
replays the same generator to recover which original element landed where
(``shuffled.ravel() == original.ravel()[perm]``).
"""

from __future__ import annotations

import numpy as np



def layer_rng(seed: int, layer_id: int, slice_id: int = 0) -> np.random.Generator:
    """The generator htsr uses for one layer: ``default_rng([seed, layer_id, slice_id])``.

    Derived from the seed and the layer alone, so results do not depend on the
    order or the threads the layers run on.
    """
    return np.random.default_rng([int(seed), int(layer_id), int(slice_id)])


def shuffle_stack(stack: np.ndarray, rng: np.random.Generator, dtype: type | None = None) -> np.ndarray:
    """Shuffled copy of a stack of matrices, each slice permuted within itself.

    Parameters
    ----------
    stack : ndarray, shape (rf, rows, cols) or (rows, cols)
    rng : numpy.random.Generator
        Consumed in slice order (one ``shuffle`` call per slice).
    dtype : optional
        dtype of the copy (default: the stack's).

    Returns
    -------
    ndarray, same shape as ``stack``

    Examples
    --------
    >>> W = np.arange(6.0).reshape(1, 2, 3)
    >>> S = shuffle_stack(W, np.random.default_rng(0))
    >>> sorted(S.ravel()) == sorted(W.ravel()), S.shape
    (True, (1, 2, 3))
    """
    arr = np.asarray(stack)
    out = np.array(arr, dtype=dtype or arr.dtype, order="C", copy=True)
    view = out.reshape((-1,) + out.shape[-2:]) if out.ndim >= 2 else out[None, None, :]
    for k in range(view.shape[0]):
        flat = view[k].reshape(-1)
        rng.shuffle(flat)
    return out


def permutations(shape: tuple[int, ...], rng: np.random.Generator, replica: int = 0) -> np.ndarray:
    """The permutations :func:`shuffle_stack` applies with a generator in the same state.

    Parameters
    ----------
    shape : (rf, rows, cols)
    rng : numpy.random.Generator
        A fresh generator equal to the one given to :func:`shuffle_stack`.
    replica : int
        Skip this many earlier :func:`shuffle_stack` calls on the generator.

    Returns
    -------
    ndarray of int64, shape (rf, rows·cols)
        ``shuffled[s].ravel() == original[s].ravel()[perm[s]]``.
    """
    rf, rows, cols = shape
    n = rows * cols
    perms = np.empty((rf, n), dtype=np.int64)
    for _ in range(replica * rf):
        rng.permutation(n)
    for s in range(rf):
        perms[s] = rng.permutation(n)
    return perms


def _gram_upper(w: np.ndarray) -> np.ndarray:
    """Upper triangle of the smaller Gram matrix of ``w`` (BLAS syrk, in w's precision)."""
    from scipy.linalg.blas import dsyrk, ssyrk

    syrk = ssyrk if w.dtype == np.float32 else dsyrk
    wt = np.ascontiguousarray(w).T  # Fortran-ordered (cols, rows) view of the C-ordered w
    return syrk(1.0, wt, trans=0 if w.shape[0] >= w.shape[1] else 1)


def slice_evals(stack: np.ndarray) -> list[np.ndarray]:
    """Ascending eigenvalues of each slice's smaller Gram matrix (in the stack's dtype), clipped at 0."""
    from scipy.linalg import eigvalsh

    out = []
    for w in stack:
        ev = eigvalsh(_gram_upper(w), lower=False, overwrite_a=True, check_finite=False)
        out.append(np.clip(ev, 0.0, None))
    return out


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance (natural log) of two non-negative vectors taken as probability vectors.

    As ``scipy.spatial.distance.jensenshannon``: both are normalized to sum 1,
    ``m = (p + q)/2`` and the distance is ``sqrt((KL(p‖m) + KL(q‖m))/2)``.

    Examples
    --------
    >>> round(jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) ** 2, 6)  # ln 2
    0.693147
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"jensen_shannon: shapes differ, {p.shape} and {q.shape}")
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return float(np.sqrt(max(0.5 * (kl(p) + kl(q)), 0.0)))
