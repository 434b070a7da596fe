"""Correlation traps: which randomized spikes are traps, and where they are.

A spike of the randomized ESD (an eigenvalue of the shuffled matrix above the
randomized Marchenko–Pastur edge) has one of two causes:

* **the mean** — shuffling keeps the mean m of the elements, so the shuffled
  matrix is m·11ᵀ plus noise of variance v. For an N×M matrix (c = M/N) its
  rank-one part has singular value θ = m·sqrt(NM), i.e. θ̃ = m·sqrt(M/v) in units
  of the noise scale sqrt(N·v); when θ̃ > c^(1/4) it leaves the bulk as an
  outlier (Baik–Ben Arous–Péché; Benaych-Georges–Nadakuditi) at
  λ = N·v·(1 + θ̃²)(c + θ̃²)/θ̃², with singular vectors close to the constant
  vectors. This spike is no trap: every matrix with a non-zero mean has it.
* **a trap** — a few elements much larger than the rest. Their rank-one
  pieces survive the shuffle and show up as spikes whose singular vectors are
  localized on those few entries.

:func:`analyze_spikes` tells them apart by the singular vectors (a mean spike's
vectors overlap the constant vectors; a trap's are localized) and locates each
trap's entries from the vectors: entry (i, j) contributes uᵢ·W̃ᵢⱼ·vⱼ to the
singular value σ = uᵀW̃v, and the entries with the largest contributions are
the trap. They are mapped back to the original matrix through the permutation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .esd import gram
from .randomize import RandomizedESD, layer_rng, permutations

MEAN_OVERLAP = 0.25  # observed / predicted overlap product that marks the mean's outlier
MIN_OVERLAP = 0.01  # …and never below this (a trap's overlap is ~1/(rows·cols))
MAX_ENTRIES = 10
ENTRY_SHARE = 0.1  # an entry is part of a trap when it contributes ≥ 10% of σ
TOP_LINES = 16  # rows and columns examined per trap


def mean_outlier_eval(mean: float, var: float, rows: int, cols: int) -> float:
    """Predicted eigenvalue of the outlier a non-zero mean produces (NaN when it stays in the bulk).

    Parameters
    ----------
    mean, var : float
        Mean and variance of the matrix's elements.
    rows, cols : int
        Shape of the matrix.

    Examples
    --------
    >>> round(mean_outlier_eval(0.01, 1 / 512, 512, 512), 2)
    28.25
    >>> mean_outlier_eval(0.0, 1.0, 100, 50)
    nan
    """
    N, M = max(rows, cols), min(rows, cols)
    if not var > 0:  # a constant matrix m·11ᵀ: its one eigenvalue, the limit of the formula below
        return float(mean * mean * N * M) if mean != 0 else float("nan")
    c = M / N
    t2 = mean * mean * M / var  # θ̃²
    if not t2 > np.sqrt(c):
        return float("nan")
    return float(N * var * (1.0 + t2) * (c + t2) / t2)


def mean_outlier_overlap(mean: float, var: float, rows: int, cols: int) -> float:
    """Predicted product of the squared overlaps of the mean outlier's singular vectors with the constant vectors.

    Benaych-Georges–Nadakuditi: with c = M/N and θ̃² as in :func:`mean_outlier_eval`,
    the long side's squared overlap is 1 − (c + θ̃²)/(θ̃²(θ̃² + 1)) and the short
    side's 1 − c(1 + θ̃²)/(θ̃²(θ̃² + c)). 0 when no outlier is predicted.

    Examples
    --------
    >>> round(mean_outlier_overlap(np.sqrt(2 / 512 / 512), 1 / 512, 512, 512), 3)  # θ̃² = 2, c = 1
    0.25
    """
    N, M = max(rows, cols), min(rows, cols)
    if not var > 0:  # constant matrix: the singular vectors are the constant vectors
        return 1.0 if mean != 0 else 0.0
    c = M / N
    t2 = mean * mean * M / var
    if not t2 > np.sqrt(c):
        return 0.0
    long_side = 1.0 - (c + t2) / (t2 * (t2 + 1.0))
    short_side = 1.0 - c * (1.0 + t2) / (t2 * (t2 + c))
    return float(max(long_side, 0.0) * max(short_side, 0.0))


@dataclass
class SliceSpikes:
    """The randomized spikes of one shuffled matrix.

    Attributes
    ----------
    mean_spike : bool
        One spike is the mean's outlier.
    mean_eval : float
        Its predicted eigenvalue (NaN when the mean predicts no outlier).
    traps : list of dict
        ``trap_eval`` (the spike's eigenvalue), ``entries``: list of
        ``(row, col, value)`` in the original matrix (largest contribution first),
        and ``components``: the spike's rank-one component σ·uᵢ·vⱼ at each entry.
    """

    mean_spike: bool = False
    mean_eval: float = float("nan")
    traps: list = field(default_factory=list)


def top_eigh(g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenpairs of a symmetric matrix, ascending: ``scipy.linalg.eigh(g, subset_by_index=…)``.

    The same LAPACK call (``?syevr``, lower triangle, ``abstol=0``, optimal workspace) in
    the same library (scipy's OpenBLAS), made through ctypes so that the GIL is
    released meanwhile (scipy's wrapper holds it, stalling the engine's other
    worker). Checked once to give scipy's bits; elsewhere scipy's ``eigh``.
    """
    fn = _syevr(np.dtype(g.dtype).name)
    n = g.shape[0]
    if fn is None:
        from scipy.linalg import eigh

        return eigh(g, subset_by_index=(n - k, n - 1), check_finite=False)
    return fn(g, k)


@functools.cache
def _syevr(dtype: str) -> Callable[[np.ndarray, int], tuple] | None:
    """``?syevr`` of scipy's OpenBLAS through ctypes (see :func:`top_eigh`), or None."""
    import ctypes
    import glob
    import os

    import scipy
    import scipy.linalg.lapack  # loads the library
    from scipy.linalg import eigh

    if dtype not in ("float32", "float64"):
        return None
    letter = "s" if dtype == "float32" else "d"
    i32 = ctypes.c_int32
    here = os.path.dirname(scipy.__file__)
    for path in glob.glob(os.path.join(here, "..", "scipy.libs", "*openblas*")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        raw = getattr(lib, f"scipy_{letter}syevr_", None) or getattr(lib, f"{letter}syevr_", None)
        if raw is None:
            continue
        raw.restype = None
        ctype = ctypes.c_float if letter == "s" else ctypes.c_double

        def solve(g: np.ndarray, k: int, _raw: Any = raw, _ctype: Any = ctype, _dt: np.dtype = np.dtype(dtype)) -> tuple:
            n = g.shape[0]
            a = np.array(g, dtype=_dt, order="F")  # scipy's wrapper works on such a copy too
            w = np.zeros(n, dtype=_dt)
            z = np.zeros((n, k), dtype=_dt, order="F")
            isuppz = np.zeros(2 * max(1, n), dtype=np.int32)
            m, info = i32(0), i32(0)
            vl, vu, abstol = _ctype(0.0), _ctype(1.0), _ctype(0.0)
            nn, il, iu, ldz = i32(n), i32(n - k + 1), i32(n), i32(max(1, n))

            def call(work: np.ndarray, lwork: int, iwork: np.ndarray, liwork: int) -> None:
                _raw(b"V", b"I", b"L", ctypes.byref(nn), a.ctypes.data_as(ctypes.c_void_p), ctypes.byref(nn),
                     ctypes.byref(vl), ctypes.byref(vu), ctypes.byref(il), ctypes.byref(iu), ctypes.byref(abstol),
                     ctypes.byref(m), w.ctypes.data_as(ctypes.c_void_p), z.ctypes.data_as(ctypes.c_void_p),
                     ctypes.byref(ldz), isuppz.ctypes.data_as(ctypes.c_void_p), work.ctypes.data_as(ctypes.c_void_p),
                     ctypes.byref(i32(lwork)), iwork.ctypes.data_as(ctypes.c_void_p), ctypes.byref(i32(liwork)),
                     ctypes.byref(info), ctypes.c_size_t(1), ctypes.c_size_t(1), ctypes.c_size_t(1))

            qw, qi = np.zeros(1, dtype=_dt), np.zeros(1, dtype=np.int32)
            call(qw, -1, qi, -1)  # workspace query
            lwork = max(int(np.nextafter(qw[0], np.inf)), 26 * n, 1)
            liwork = max(int(qi[0]), 10 * n, 1)
            call(np.zeros(lwork, dtype=_dt), lwork, np.zeros(liwork, dtype=np.int32), liwork)
            if info.value != 0:
                raise np.linalg.LinAlgError(f"{letter}syevr failed (info={info.value})")
            return w[:m.value], z[:, :m.value]

        x = np.random.default_rng(0).standard_normal((90, 60)).astype(dtype)
        x = x.T @ x
        try:
            got = solve(x, 7)
        except np.linalg.LinAlgError:
            return None
        want = eigh(x, subset_by_index=(53, 59), check_finite=False)
        if all(np.array_equal(a, b) for a, b in zip(got, want)):
            return solve
        return None
    return None


def _top_vectors(w: np.ndarray, k: int, g: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k singular triplets (s², u, v) of w, largest first, via the smaller Gram matrix ``g`` (in w's dtype)."""
    rows, cols = w.shape
    small = min(rows, cols)
    k = min(k, small)
    vals, vecs = top_eigh(gram(w) if g is None else g, k)
    vals, vecs = vals[::-1].astype(np.float64), vecs[:, ::-1].astype(np.float64)
    s = np.sqrt(np.clip(vals, 0.0, None))
    safe = np.where(s > 0, s, 1.0)
    if rows >= cols:
        v = vecs
        u = _times(w, v, transpose=False) / safe
    else:
        u = vecs
        v = _times(w, u, transpose=True) / safe
    return vals, u, v


#: Elements of ``w`` widened to float64 at a time by :func:`_times`.
WIDEN_CHUNK = 1 << 22


def _times(w: np.ndarray, x: np.ndarray, transpose: bool) -> np.ndarray:
    """``float64(w) @ x`` (or ``float64(w).T @ x``) without a float64 copy of the whole of ``w``.

    ``w`` is widened in slabs of whole rows (columns with ``transpose``), a
    multiple of 64 of them, each multiplied on its own: the same products,
    summed in the same order as with the whole copy (checked bit for bit by
    ``tests/test_randomize_traps.py``), in 32 MB instead of 8 bytes per element.
    """
    rows, cols = w.shape
    n = cols if transpose else rows
    other = rows if transpose else cols
    step = max(64, WIDEN_CHUNK // max(other, 1) // 64 * 64)
    if step >= n:
        w64 = np.asarray(w, dtype=np.float64)
        return w64.T @ x if transpose else w64 @ x
    out = np.empty((n, x.shape[1]), dtype=np.float64)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        if transpose:
            out[lo:hi] = np.asarray(w[:, lo:hi], dtype=np.float64).T @ x
        else:
            out[lo:hi] = np.asarray(w[lo:hi], dtype=np.float64) @ x
    return out


def _locate(w: np.ndarray, u: np.ndarray, v: np.ndarray, sigma: float) -> list[tuple[int, int]]:
    """Entries (i, j) of w that make the component σ u vᵀ, largest contribution first."""
    ri = np.argsort(-np.abs(u))[:TOP_LINES]
    cj = np.argsort(-np.abs(v))[:TOP_LINES]
    block = u[ri, None] * w[np.ix_(ri, cj)].astype(np.float64) * v[None, cj]
    order = np.argsort(-block, axis=None)
    out: list[tuple[int, int]] = []
    for flat in order[:MAX_ENTRIES]:
        a, b = divmod(int(flat), cj.size)
        if out and block[a, b] < ENTRY_SHARE * sigma:
            break
        out.append((int(ri[a]), int(cj[b])))
    return out


def analyze_spikes(shuffled: np.ndarray, original: np.ndarray, perm_fn: Callable[[], np.ndarray], num_spikes: int,
                   g: np.ndarray | None = None) -> SliceSpikes:
    """Classify the top ``num_spikes`` randomized eigenvalues of one shuffled matrix.

    Parameters
    ----------
    shuffled : ndarray, shape (rows, cols)
        The shuffled matrix (float32 is enough: only its top singular vectors are used).
    original : ndarray, shape (rows, cols)
        The matrix before shuffling (values and the mean).
    perm_fn : callable
        ``perm_fn()`` returns the permutation, ``shuffled.ravel() == original.ravel()[perm]``
        (called only when a trap has to be located).
    num_spikes : int
        How many of the largest eigenvalues are spikes.
    g : ndarray, optional
        The smaller Gram matrix of ``shuffled`` when already computed.

    Returns
    -------
    SliceSpikes
    """
    w = np.asarray(shuffled)
    rows, cols = w.shape
    out = SliceSpikes()
    flat = np.asarray(original, dtype=np.float64).reshape(-1)
    mean = float(flat.sum()) / flat.size
    var = max(float(np.dot(flat, flat)) / flat.size - mean * mean, 0.0)
    out.mean_eval = mean_outlier_eval(mean, var, rows, cols)
    if num_spikes <= 0:
        return out
    vals, u, v = _top_vectors(w, num_spikes, g)
    ou = (u.sum(axis=0) ** 2) / rows
    ov = (v.sum(axis=0) ** 2) / cols
    overlap = ou * ov
    mean_idx = -1
    expected = mean_outlier_overlap(mean, var, rows, cols)
    if np.isfinite(out.mean_eval) and overlap.size:
        best = int(np.argmax(overlap))
        if overlap[best] >= max(MEAN_OVERLAP * expected, MIN_OVERLAP):
            mean_idx = best
            out.mean_spike = True
    perm = None
    for k in range(vals.size):
        if k == mean_idx:
            continue
        sigma = float(np.sqrt(max(vals[k], 0.0)))
        cells = _locate(w, u[:, k], v[:, k], sigma)
        if perm is None:
            perm = perm_fn()
        orig_flat = original.reshape(-1)
        entries = []
        components = []
        for i, j in cells:
            src = int(perm[i * cols + j])
            r, c = divmod(src, cols)
            entries.append((r, c, float(orig_flat[src])))
            components.append(sigma * float(u[i, k]) * float(v[j, k]))
        out.traps.append({"trap_eval": float(vals[k]), "entries": entries, "components": components})
    return out


@dataclass(frozen=True)
class Trap:
    """One correlation trap: a randomized spike localized on a few large elements.

    Attributes
    ----------
    slice : int or None
        Index of the slice in a pooled conv layer's stack (None for a single matrix).
    eval : float
        The spike's eigenvalue in the shuffled matrix.
    entries : tuple of (row, col, value)
        The elements responsible, in the analyzed matrix (largest contribution first).
    components : tuple of float
        The spike's rank-one component σ·uᵢ·vⱼ at each entry (used by ``remove_traps``).
    shape : tuple of int or None
        (rows, cols) of the analyzed matrix: which axis an entry's row and column index
        (used to group traps of different layers, :mod:`htsr.spectral.trap_groups`).
    """

    slice: int | None
    eval: float
    entries: tuple
    components: tuple
    shape: tuple[int, int] | None = None


@dataclass(frozen=True)
class TrapSearch:
    """The randomized spikes of a layer, classified.

    Attributes
    ----------
    num_traps : int or None
        Spikes that are traps (None when the randomized MP fit failed).
    mean_spike : bool
        One spike is the outlier of the weights' non-zero mean.
    mean_eval : float
        The largest predicted mean outlier over the slices (NaN when none leaves the bulk).
    traps : tuple of Trap
    spikes_per_slice : tuple of int
        Eigenvalues of each slice's first shuffle above the randomized fit's edge.
    """

    num_traps: int | None
    mean_spike: bool
    mean_eval: float
    traps: tuple
    spikes_per_slice: tuple


def find_traps(stack: np.ndarray, shuffled: np.ndarray, randomized: RandomizedESD,
               key: tuple[int, int, int]) -> TrapSearch:
    """Classify the first shuffle's spikes of every slice (see :func:`analyze_spikes`).

    Parameters
    ----------
    stack : ndarray, shape (rf, rows, cols)
        The matrices before shuffling.
    shuffled : ndarray, shape (rf, rows, cols)
        The first shuffle (from :func:`htsr.spectral.randomize.randomized_esd`).
    randomized : RandomizedESD
        Its result (the per-slice eigenvalues and the MP fit's edge).
    key : (seed, layer_id, slice_id)
        The generator key given to ``randomized_esd`` (replayed to map entries back).

    Returns
    -------
    TrapSearch
    """
    fit = randomized.fit
    if fit is None:
        return TrapSearch(None, False, float("nan"), (), ())
    mean_evals = []
    mean_spike = False
    traps: list[Trap] = []
    counts = []
    grams = getattr(shuffled, "grams", None)  # a ShuffledStack from randomized_esd keeps them
    kept: list = [getattr(shuffled, "perms", None)]

    def all_perms() -> list:
        if kept[0] is None:  # replayed once for the whole stack, only when a trap is located
            kept[0] = list(permutations(stack.shape, layer_rng(*key)))
        return kept[0]

    for s, ev in enumerate(randomized.slice_evals):
        k = int(np.count_nonzero(ev.astype(np.float64) > fit.edge))
        counts.append(k)

        def perm_fn(s: int = s) -> np.ndarray:
            return all_perms()[s]

        spikes = analyze_spikes(shuffled[s], stack[s], perm_fn, k, None if grams is None else grams[s])
        if np.isfinite(spikes.mean_eval):
            mean_evals.append(spikes.mean_eval)
        mean_spike = mean_spike or spikes.mean_spike
        for t in spikes.traps:
            traps.append(Trap(slice=s if stack.shape[0] > 1 else None, eval=t["trap_eval"],
                              entries=tuple(t["entries"]), components=tuple(t["components"]),
                              shape=(int(stack.shape[1]), int(stack.shape[2]))))
    return TrapSearch(num_traps=len(traps), mean_spike=mean_spike,
                      mean_eval=max(mean_evals) if mean_evals else float("nan"),
                      traps=tuple(traps), spikes_per_slice=tuple(counts))
