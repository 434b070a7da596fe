"""Elementwise shuffling of weight matrices and the randomized ESD.

Shuffling every element of a matrix (each conv slice within itself) destroys
all correlations between its rows and columns but keeps the multiset of its
values: its mean, variance and any unusually large elements. The ESD of the
shuffled matrix is a Marchenko–Pastur bulk plus, possibly, the outlier of a
non-zero mean and the spikes of large elements (correlation traps).

Randomness comes only from the ``numpy.random.Generator`` passed in. A slice is
shuffled by a uniformly random permutation of its flattened elements
(:func:`permutation`: sorted random keys for large slices); :func:`permutations`
replays the same generator to recover which original element landed where
(``shuffled.ravel() == original.ravel()[perm]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .marchenko_pastur import MPFit, safe_fit_mp

#: Matrices with fewer eigenvalues than this get ``REPLICAS`` shuffles, as the reference.
SMALL_LAYER = 100
REPLICAS = 5

def layer_rng(seed: int, layer_id: int, slice_id: int = 0) -> np.random.Generator:
    """The generator htsr uses for one layer: ``default_rng([seed, layer_id, slice_id])``.

    Derived from the seed and the layer alone, so results do not depend on the
    order or the threads the layers run on.
    """
    return np.random.default_rng([int(seed), int(layer_id), int(slice_id)])


#: From this many elements :func:`permutation` sorts random keys; below, ``rng.permutation``.
SORT_MIN = 1 << 16
#: Up to this many: above it the keys' random bits get few enough for ties to pile up.
SORT_MAX = 1 << 27


def permutation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` (int64), faster than Fisher–Yates for large ``n``.

    From ``SORT_MIN`` to ``SORT_MAX`` elements: each index ``i`` gets a key whose
    high ``64 − b`` bits are random (``b`` bits hold ``i``, ``2^b ≥ n``); one
    ``sort`` of these 64-bit integers (numpy's vectorized sort, no argsort)
    orders the indices by their random parts, and every run of equal random
    parts (a handful: ~n²/2^(65−b), e.g. ~70 of 11.7M) is then shuffled with
    ``rng.shuffle``. The random parts are independent and uniform, so the
    resulting order, ties broken uniformly, is a uniformly random permutation,
    as from ``rng.permutation``: measured 0.23 s instead of 0.32 s for
    MiniLM's 11.7M-element embedding (numpy's Fisher–Yates is bound by one
    bounded random draw per element). Other sizes: ``rng.permutation(n)``.

    The generator is consumed in a way that depends on ``n`` only, so
    :func:`permutations` can replay it.

    Examples
    --------
    >>> p = permutation(100_000, np.random.default_rng(0))
    >>> bool(np.array_equal(np.sort(p), np.arange(100_000)))
    True
    """
    if n < SORT_MIN or n > SORT_MAX:
        return rng.permutation(n)
    b = (n - 1).bit_length()
    mask = np.uint64((1 << b) - 1)
    keys = rng.bit_generator.random_raw(n)
    np.bitwise_and(keys, ~mask, out=keys)
    step = 1 << 16  # the index bits in cached chunks: no n-long temporary (2.5x faster for this step)
    index, buf = np.arange(step, dtype=np.uint64), np.empty(step, dtype=np.uint64)
    for lo in range(0, n, step):
        m = min(step, n - lo)
        np.add(index[:m], np.uint64(lo), out=buf[:m])
        np.bitwise_or(keys[lo:lo + m], buf[:m], out=keys[lo:lo + m])
    keys.sort()
    ties = _ties(keys, mask)
    np.bitwise_and(keys, mask, out=keys)
    perm = keys.view(np.int64)
    if ties.size:
        cut = np.flatnonzero(np.diff(ties) != 1)
        starts = np.concatenate(([ties[0]], ties[cut + 1]))
        ends = np.concatenate((ties[cut], [ties[-1]])) + 2
        for s, e in zip(starts.tolist(), ends.tolist()):
            rng.shuffle(perm[s:e])
    return perm


#: Keys compared at a time by :func:`_ties`: no n-long temporaries (10⁸ keys: 0.1 s, against 0.2–2.4 s with
#: two n-long temporaries, the slow end when their pages are new, as they are inside an analysis).
TIE_CHUNK = 1 << 20


def _ties(keys: np.ndarray, mask: np.uint64) -> np.ndarray:
    """Indices i where sorted ``keys[i]`` and ``keys[i + 1]`` share their random (high) part, ascending."""
    n = keys.size
    found = []
    xor = np.empty(min(TIE_CHUNK, max(n - 1, 0)), dtype=np.uint64)
    for lo in range(0, n - 1, TIE_CHUNK):
        hi = min(n - 1, lo + TIE_CHUNK)
        x = xor[:hi - lo]
        np.bitwise_xor(keys[lo + 1:hi + 1], keys[lo:hi], out=x)
        hits = np.flatnonzero(x <= mask)
        if hits.size:
            found.append(hits + lo)
    return np.concatenate(found) if found else np.empty(0, dtype=np.intp)


class ShuffledStack(np.ndarray):
    """The first shuffle of a stack, with what the trap search reuses from it.

    A plain ``ndarray`` (the shuffled float32 stack) carrying two attributes, set
    only on the array :func:`randomized_esd` returns (views and results of
    operations do not carry them):

    ``grams``
        The smaller Gram matrix of each slice, float32, as :func:`slice_evals`
        computed them (so the trap search does not compute them again).
    ``perms``
        The permutation of each slice (``out[s].ravel() == stack[s].ravel()[perms[s]]``),
        kept when the stack has at most ``KEEP_PERMS`` elements; else None and
        :func:`permutations` replays the generator.
    """

    grams: np.ndarray | None = None
    perms: list | None = None


#: Largest stack whose permutations :func:`randomized_esd` keeps for the trap search (int64 each).
KEEP_PERMS = 1 << 28


def shuffle_stack(stack: np.ndarray, rng: np.random.Generator, dtype: type | None = None,
                  keep: list | None = None) -> np.ndarray:
    """Shuffled copy of a stack of matrices, each slice permuted within itself.

    Parameters
    ----------
    stack : ndarray, shape (rf, rows, cols) or (rows, cols)
    rng : numpy.random.Generator
        Consumed in slice order (one :func:`permutation` per slice).
    dtype : optional
        dtype of the copy (default: the stack's).
    keep : list, optional
        When given, each slice's permutation is appended to it.

    Returns
    -------
    ndarray, same shape as ``stack``
        ``out[s].ravel() == stack[s].ravel()[permutation(rows·cols, rng)]``.

    Examples
    --------
    >>> W = np.arange(6.0).reshape(1, 2, 3)
    >>> S = shuffle_stack(W, np.random.default_rng(0))
    >>> sorted(S.ravel()) == sorted(W.ravel()), S.shape
    (True, (1, 2, 3))
    """
    arr = np.asarray(stack)
    dt = np.dtype(dtype or arr.dtype)
    view = arr.reshape((-1, *arr.shape[-2:])) if arr.ndim >= 2 else arr[None, None, :]
    out = np.empty(view.shape, dtype=dt)
    n = view.shape[1] * view.shape[2]
    for k in range(view.shape[0]):
        src = np.ascontiguousarray(view[k], dtype=dt).reshape(-1)
        perm = permutation(n, rng)
        np.take(src, perm, out=out[k].reshape(-1), mode="clip")  # indices valid; no buffer
        if keep is not None:
            keep.append(perm)
    return out.reshape(arr.shape)


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
        permutation(n, rng)
    for s in range(rf):
        perms[s] = permutation(n, rng)
    return perms


def replica_count(M: int) -> int:
    """Number of shuffles for an ESD of ``M`` eigenvalues: ``REPLICAS`` below ``SMALL_LAYER``, else 1.

    ``M`` is the number of eigenvalues the randomized fit sees: M·rf for a pooled
    conv layer (the reference's count), M for one matrix.
    """
    return REPLICAS if M < SMALL_LAYER else 1


def slice_evals(stack: np.ndarray, grams: np.ndarray | None = None) -> list[np.ndarray]:
    """Ascending eigenvalues of each slice's smaller Gram matrix (in the stack's dtype), clipped at 0.

    numpy's matmul (a symmetric rank-k product for ``wᵀw``, per slice also in a
    batch) and ``eigvalsh`` release the GIL, so the engine's other worker keeps
    running meanwhile. Slices of one shape are solved as one batch. ``grams``:
    the Gram matrices when already computed (``slice_grams(stack)``).
    """
    ev = np.linalg.eigvalsh(slice_grams(stack) if grams is None else grams)
    return [np.clip(e, 0.0, None) for e in ev]


def slice_grams(stack: np.ndarray) -> np.ndarray:
    """The smaller Gram matrix of each slice of a (rf, rows, cols) stack, in its dtype, shape (rf, M, M)."""
    from .esd import gram

    return gram(stack[0])[None] if stack.shape[0] == 1 else gram(stack)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance (natural log) of two non-negative vectors taken as probability vectors.

    ``scipy.spatial.distance.jensenshannon``, with a clear error for vectors of different lengths.

    Examples
    --------
    >>> round(jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) ** 2, 6)  # ln 2
    0.693147
    """
    from scipy.spatial.distance import jensenshannon

    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"jensen_shannon: shapes differ, {p.shape} and {q.shape}")
    return float(jensenshannon(p, q))


@dataclass(frozen=True)
class RandomizedESD:
    """The ESD of a layer's shuffled matrices and its Marchenko–Pastur fit.

    Attributes
    ----------
    evals : ndarray
        Sorted eigenvalues of all shuffles (``replicas`` of them), float64.
    first : ndarray
        Sorted eigenvalues of the first shuffle (the one traps are located in).
    slice_evals : tuple of ndarray
        The first shuffle's ascending eigenvalues per slice.
    max_eval : float
        Largest randomized eigenvalue (``max_rand_eval``).
    distance : float
        Jensen–Shannon distance of the sorted original and first-shuffle eigenvalues.
    softrank, maxdist : float
        ``max_eval / λmax`` and ``λmax − max_eval`` of the original ESD.
    fit : MPFit or None
        MP fit of ``evals`` (None when it fails).
    replicas : int
        Number of shuffles.
    """

    evals: np.ndarray
    first: np.ndarray
    slice_evals: tuple
    max_eval: float
    distance: float
    softrank: float
    maxdist: float
    fit: MPFit | None
    replicas: int


def shuffled_spectra(stack: np.ndarray, key: tuple[int, int, int],
                     replicas: int = 1) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """The part of :func:`randomized_esd` that does not need the layer's own eigenvalues.

    Returns the first shuffled stack (a :class:`ShuffledStack`), its per-slice eigenvalues, their
    sorted float64 pool and the pooled, sorted eigenvalues of all ``replicas`` shuffles. The engine computes it while
    the layer's own ESD is computed on another thread, then passes it to :func:`randomized_esd`
    (``spectra=``): the same bits as computing it there.
    """
    rng = layer_rng(*key)
    perms: list | None = [] if np.size(stack) <= KEEP_PERMS else None
    shuffled = shuffle_stack(stack, rng, dtype=np.float32, keep=perms).view(ShuffledStack)
    shuffled.perms = perms
    shuffled.grams = slice_grams(shuffled)
    per_slice = slice_evals(shuffled, shuffled.grams)
    first = np.sort(np.concatenate(per_slice)).astype(np.float64)
    pools = [first]
    for _ in range(replicas - 1):
        pools.append(np.concatenate(slice_evals(shuffle_stack(stack, rng, dtype=np.float32))).astype(np.float64))
    return shuffled, per_slice, first, (np.sort(np.concatenate(pools)) if len(pools) > 1 else first)


def randomized_esd(stack: np.ndarray, evals: np.ndarray, Q: float, M: int, key: tuple[int, int, int],
                   replicas: int = 1, spectra: tuple | None = None) -> tuple[RandomizedESD, np.ndarray]:
    """Shuffle each matrix of ``stack`` (float32), compute the randomized ESD and fit MP to it.

    The one randomization path of htsr: ``analyze(randomize=True)``, ``remove_traps``,
    ``SVDSharpness`` and ``WeightWatcher.get_ESD(random=True)`` all call it.

    Parameters
    ----------
    stack : ndarray, shape (rf, rows, cols)
        The matrices as analyzed (conv slices scaled).
    evals : ndarray
        Sorted eigenvalues of ``stack`` (pooled).
    Q : float
        Aspect ratio N/M.
    M : int
        Smaller side of each matrix (the MP fit's Tracy–Widom margin).
    key : (seed, layer_id, slice_id)
        Seeds the generator (:func:`layer_rng`); :func:`permutations` replays it.
    replicas : int
        Number of shuffles pooled into ``evals`` (see :func:`replica_count`).
    spectra : tuple, optional
        :func:`shuffled_spectra` of the same ``stack``, ``key`` and ``replicas``, when already computed.

    Returns
    -------
    (RandomizedESD, ndarray)
        The result, and the first shuffled stack (float32, a :class:`ShuffledStack` that also
        holds its Gram matrices and permutations for :func:`htsr.spectral.traps.find_traps`).

    Examples
    --------
    >>> W = np.random.default_rng(0).standard_normal((1, 300, 100))
    >>> ev = np.sort(np.linalg.eigvalsh(W[0].T @ W[0]))
    >>> rand, shuffled = randomized_esd(W, ev, 3.0, 100, key=(0, 1, 0))
    >>> rand.fit.num_spikes, shuffled.dtype
    (0, dtype('float32'))
    """
    shuffled, per_slice, first, all_evals = shuffled_spectra(stack, key, replicas) if spectra is None else spectra
    max_rand = float(all_evals[-1])
    lam_max = float(evals[-1])
    distance = jensen_shannon(evals, first) if first.size == evals.size else float("nan")
    result = RandomizedESD(
        evals=all_evals, first=first, slice_evals=tuple(per_slice), max_eval=max_rand, distance=distance,
        softrank=max_rand / lam_max if lam_max > 0 else float("nan"), maxdist=lam_max - max_rand,
        fit=safe_fit_mp(all_evals, Q, M), replicas=max(replicas, 1),
    )
    return result, shuffled
