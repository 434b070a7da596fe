"""Eigenvalues of large matrices in bounded memory: the Gram matrix accumulated block by block.

A dense layer with at least ``BLOCKED_MIN_ELEMENTS`` entries is never copied
whole to float64. Its smaller Gram matrix is summed from blocks read straight
from the stored dtype (a memory-mapped bfloat16/float16/float32 safetensors
tensor, or an in-memory array)::

    rows ≥ cols:  G = Σ_b W[b, :]ᵀ W[b, :]      (row blocks)
    rows < cols:  G = Σ_b W[:, b] W[:, b]ᵀ      (column blocks)

each block a symmetric rank-k update (CBLAS ``syrk`` with β = 1, in place, from
the OpenBLAS numpy ships; numpy's ``matmul`` into one more M×M buffer where
that library is not found) in float64, then the same eigensolver as :func:`htsr.spectral.esd.compute_esd`. Only the order of
the sums differs from the whole-matrix product, so the eigenvalues agree with
it to rounding (tested to 1e-12 relative). The weight checks of
:func:`htsr.matrices.check_weights` (NaN/Inf, all zero, overflow, dtype) run on
every block, with the same messages.

Both cores work on one large layer: each block's update is cut into a fixed
partition of ``PANEL``-wide tiles of the Gram matrix (``syrk`` on the diagonal,
``gemm`` above it), each added by one single-threaded CBLAS call on a
pool of ``threads`` threads (one per core by default, closed with the layer) while the calling thread
decodes the next block. The tiles do not depend on the thread count, so the
Gram matrix is bit-identical for any ``threads`` and any engine ``workers``;
there is one Gram matrix per layer, never one per thread. The eigensolver
stays single-threaded (threaded LAPACK sums in another order: 1 and 2 threads
differ in the last bits); it overlaps with the other workers' layers.

A slice too ill-conditioned for the Gram route (λmin/λmax ≤ ``GRAM_SAFE_RATIO``)
falls back, as in ``compute_esd``, to singular values of the triangular factor
R of a streamed QR (R absorbs one block at a time in place, LAPACK
``dtpqrt``: the same singular values as W, in M×M memory). Only the eigenvalues
the Gram route cannot resolve are replaced: the k ≤ ``SMALL_END_MAX`` at or
below ``GRAM_SAFE_RATIO``·λmax, by R's k smallest singular values from Lanczos
on (RᵀR)⁻¹ (two triangular solves per step); the others keep their Gram
values, whose absolute error (a few ε·λmax) is the SVD's. The full SVD of R
(4× the QR's cost at 4096²) is left for the rare case that route declines
(:func:`fallback_evals`). A square 8192×8192 layer takes the fallback about
one time in ten (its λmin/λmax is ~1e-9 and spread widely), a low-rank spike
on it almost always.

Memory held for an N×M layer (M the smaller side), besides the source:

==================  =========================================================
the Gram matrix     8·M² bytes (plus an M×M product buffer without CBLAS)
one block           ``BLOCK_BYTES`` of float64 (64 MiB) plus its decoded form
eigensolver         one more M×M copy at most (numpy's ``eigvalsh``)
a memory map        one block's pages (row blocks); the whole stored tensor
                    while a column block is read (rows < cols)
==================  =========================================================

For Llama-2-70B's 28672×8192 bfloat16 matrices this is about 0.7 GB per
worker instead of ~6 GB. Statistics that need every element at once are the exception:
``randomize`` shuffles the whole matrix (see :func:`randomize_bytes`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from .matrices import check_range, check_weights, nonfinite_counts, raise_nonfinite, work_bytes
from .sources.base import StoredMatrix
from .spectral.esd import ESD, GRAM_SAFE_RATIO, eigvalsh_gram, rank_count

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

#: Dense matrices with at least this many entries (a 256 MiB float64 copy) are read in blocks.
BLOCKED_MIN_ELEMENTS = 1 << 25
#: Bytes of float64 per block.
BLOCK_BYTES = 64 << 20


def uses_blocks(shape: tuple[int, ...], min_elements: int | None = None) -> bool:
    """True when a tensor of ``shape`` is analyzed block by block (2-D, at least ``min_elements``)."""
    limit = BLOCKED_MIN_ELEMENTS if min_elements is None else min_elements
    return len(shape) == 2 and math.prod(shape) >= limit


def gram_bytes(shape: tuple[int, ...], itemsize: int) -> int:
    """Upper estimate of the bytes the blocked route needs for one matrix (source data included)."""
    rows, cols = shape[0], shape[1]
    m = min(rows, cols)
    return rows * cols * itemsize + 3 * 8 * m * m + 2 * BLOCK_BYTES


def randomize_bytes(shape: tuple[int, ...]) -> int:
    """Bytes ``randomize`` needs on top for one 2-D matrix of ``shape``.

    Shuffling needs every element at once: the decoded matrix (float32, 4 B per
    element), the shuffled copy (float32, 4 B), the permutation (int64, 8 B),
    the trap statistics' float64 view of the original (8 B) and a float32 Gram
    matrix: 24 B per element + 8·M² (5.7 GB for a 28672×8192 matrix).
    """
    n = math.prod(shape)
    m = min(shape[0], shape[1])
    return 24 * n + 8 * m * m


def memory_reason(shape: tuple[int, ...], dtype: str, available: int | None, randomize: bool = False) -> str | None:
    """Why a layer is skipped for memory (None when it fits or the OS does not say).

    ``dtype`` is the stored dtype's name; bfloat16/float8 are counted as the
    float32 they are decoded to. Large dense matrices are counted as the
    blocked route needs them (:func:`gram_bytes`), plus what
    ``randomize`` needs to shuffle every element (:func:`randomize_bytes`).
    """
    if available is None:
        return None
    try:  # only plain names: np.dtype() parses strings like "(9,)f8" and may raise anything on junk
        itemsize = max(np.dtype(dtype).itemsize, 1) if dtype.isidentifier() else 4
    except Exception:  # bfloat16, float8_*, qint8 …: decoded to float32
        itemsize = 4
    if uses_blocks(shape):  # the stored bytes (memory-mapped), not the decoded float32
        itemsize = {"bfloat16": 2, "float8_e4m3": 1, "float8_e5m2": 1}.get(dtype, itemsize)
        need = gram_bytes(shape, itemsize) + (randomize_bytes(shape) if randomize else 0)
    else:
        need = work_bytes(shape, itemsize)
    if need <= available:
        return None
    gib = 1024 ** 3
    return (f"needs about {need / gib:.1f} GiB of memory for its eigenvalues, "
            f"more than the {available / gib:.1f} GiB available")


def _spans(total: int, step: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, step):
        yield start, min(start + step, total)


def iter_blocks(m: StoredMatrix, block_elements: int) -> Iterator[np.ndarray]:
    """Decoded blocks of ``m`` oriented as (k, M): row blocks when rows ≥ cols, else column blocks transposed.

    ``Σ blockᵀ·block`` over the blocks is the smaller Gram matrix.
    """
    rows, cols = m.shape
    if rows >= cols:
        for a, b in _spans(rows, max(1, block_elements // cols)):
            yield m.rows(a, b)
    else:
        for a, b in _spans(cols, max(1, block_elements // rows)):
            yield m.cols(a, b).T


class _Scan:
    """The checks of :func:`~htsr.matrices.check_weights`, over the blocks of one matrix."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.lo = math.inf
        self.hi = -math.inf
        self.nan = 0
        self.inf = 0
        self.note: str | None = None

    def add(self, block: np.ndarray) -> np.ndarray:
        """Check one block; return it as a numeric array (ml_dtypes widened to float32)."""
        if self.note is None:  # the dtype checks and note, once
            _, self.note = check_weights(block[:0], self.where)
        if block.dtype.kind == "V":  # ml_dtypes bfloat16 / float8 in memory
            block = np.asarray(block).astype(np.float32)
        if block.size == 0:
            return block
        lo, hi = float(block.min()), float(block.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            nan, inf = nonfinite_counts(block)
            self.nan += nan
            self.inf += inf
        else:
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        return block

    @property
    def bad(self) -> bool:
        return bool(self.nan or self.inf)

    def blocks(self, m: StoredMatrix, step: int) -> Iterator[np.ndarray]:
        """The checked blocks of ``m`` while they are all finite (the scan goes on to count every NaN/Inf)."""
        for block in iter_blocks(m, step):
            block = self.add(block)
            if not self.bad:
                yield block

    def finish(self, size: int) -> str:
        if self.bad:
            raise_nonfinite(self.nan, self.inf)
        check_range(self.lo if size else 0.0, self.hi if size else 0.0, size)
        return self.note or ""


@functools.cache
def _cblas(routine: str, dtype: str) -> Callable[..., None] | None:
    """CBLAS ``?syrk`` or ``?gemm`` (64-bit integers) of the OpenBLAS numpy ships, via ctypes (GIL released), or None."""
    import ctypes

    from .blas import numpy_openblas

    letter = "d" if dtype == "float64" else "s"
    real = ctypes.c_double if dtype == "float64" else ctypes.c_float
    i64, enum, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    args = {  # (order, uplo, trans, n, k, alpha, A, lda, beta, C, ldc)
        "syrk": [enum, enum, enum, i64, i64, real, ptr, i64, real, ptr, i64],
        # (order, transA, transB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
        "gemm": [enum, enum, enum, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64],
    }[routine]
    for _, lib in numpy_openblas():
        fn = getattr(lib, f"scipy_cblas_{letter}{routine}64_", None) or getattr(lib, f"cblas_{letter}{routine}64_", None)
        if fn is None:
            continue
        fn.restype = None
        fn.argtypes = args
        return fn
    return None


def _syrk(dtype: str) -> Callable[..., None] | None:
    """CBLAS ``?syrk`` (see :func:`_cblas`), or None."""
    return _cblas("syrk", dtype)


#: Width of the Gram matrix's column panels: the fixed tile partition of the intra-layer split.
PANEL = 1024


def intra_threads(threads: int | None = None) -> int:
    """Threads for one large layer's Gram tiles: ``threads``, or one per core when None or 0."""
    import os

    return max(1, threads or os.cpu_count() or 1)


def _tile_pool(threads: int) -> ThreadPoolExecutor:
    """The pool of one layer's Gram tiles (closed when its Gram is done: no thread outlives the layer,
    so drawing the figures may still fork afterwards)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="htsr-tile")


def _tile_tasks(g: np.ndarray, b: np.ndarray, panel: int) -> list[Callable[[], None]] | None:
    """``g += bᵀ b`` (upper triangle) as one single-threaded CBLAS call per tile of a fixed partition, or None.

    ``g`` (M×M, C order) is cut into ``panel``-wide column panels; tile (i, j),
    i ≤ j, adds ``b[:, i]ᵀ b[:, j]`` (``syrk`` on the diagonal, ``gemm`` above
    it). Each tile is written by exactly one call whose operands do not depend on
    how many threads run the tiles, so the sum is bit-identical for any thread
    count. None when CBLAS is not at hand or ``b`` is in neither memory order.
    """
    name = g.dtype.name
    syrk, gemm = _syrk(name), _cblas("gemm", name)  # no syrk (or a test that takes it away): numpy
    if syrk is None or gemm is None:
        return None
    size, k = g.shape[0], b.shape[0]
    if b.flags.c_contiguous:  # b row-major k×M: column i of W is b[:, i] (stride 1 across, ld = M)
        col = b.strides[1]
        ld, t_syrk, t_a, t_b = size, 112, 112, 111   # C := AᵀA + C ; C := AᵀB + C
    elif b.T.flags.c_contiguous:  # bᵀ row-major M×k: the rows of bᵀ, ld = k
        col = b.strides[1]
        ld, t_syrk, t_a, t_b = k, 111, 111, 112     # C := AAᵀ + C ; C := ABᵀ + C
    else:
        return None
    base, gbase, gi = b.ctypes.data, g.ctypes.data, g.strides[0]
    spans = list(_spans(size, panel))
    tasks: list[Callable[[], None]] = []
    for i, (i0, i1) in enumerate(spans):
        for j0, j1 in spans[i:]:
            c = gbase + i0 * gi + j0 * g.strides[1]
            if i0 == j0:
                tasks.append(functools.partial(syrk, 101, 121, t_syrk, i1 - i0, k, 1.0, base + i0 * col, ld,
                                               1.0, c, size))
            else:
                tasks.append(functools.partial(gemm, 101, t_a, t_b, i1 - i0, j1 - j0, k, 1.0, base + i0 * col, ld,
                                               base + j0 * col, ld, 1.0, c, size))
    return tasks


def _add_gram(g: np.ndarray, b: np.ndarray, buf: list) -> None:
    """``g += bᵀ b`` for a block b (k, M) through numpy: where :func:`_tile_tasks` has no CBLAS to call."""
    if not buf:
        buf.append(np.empty_like(g))
    np.matmul(b.T, b, out=buf[0])  # one operand the other's transpose: BLAS syrk, full matrix
    np.add(g, buf[0], out=g)


def _mirror_upper(g: np.ndarray, tile: int = 1024) -> None:
    """Copy the upper triangle of ``g`` onto its lower one, in place, a tile at a time."""
    m = g.shape[0]
    for a in range(0, m, tile):
        b = min(m, a + tile)
        g[a:b, :a] = g[:a, a:b].T
        t = g[a:b, a:b]
        t[...] = np.triu(t) + np.triu(t, 1).T


def blocked_gram(m: StoredMatrix, where: str = "", dtype: type = np.float64,
                 block_elements: int | None = None, threads: int | None = 1,
                 panel: int | None = None) -> tuple[np.ndarray, str]:
    """The smaller Gram matrix of ``m`` summed over blocks, and the dtype note.

    Parameters
    ----------
    m : StoredMatrix
        The matrix (rows, cols).
    where : str
        Names the layer in errors.
    dtype : float64 (default) or float32
        Precision of the blocks and the sum.
    block_elements : int, optional
        Entries per block (default ``BLOCK_BYTES / 8``).
    threads : int or None
        Threads that add each block's tiles (None or 0: one per core). The
        result is bit-identical for any value: the tiles (``panel`` wide) are
        a fixed partition, each added by one single-threaded BLAS call. While
        the threads add one block's tiles, the calling thread decodes the next.
    panel : int, optional
        Width of the tile partition (default ``PANEL``; the result depends on it, the thread count does not).

    Returns
    -------
    gram : ndarray, shape (M, M)
    note : str
        As :func:`~htsr.matrices.as_float` (e.g. ``'int8 weights analyzed as floats'``).

    Raises
    ------
    LayerError
        NaN/Inf, all-zero or overflowing weights, an unsupported dtype.

    Examples
    --------
    >>> W = np.arange(1.0, 13.0).reshape(4, 3)
    >>> G, _ = blocked_gram(StoredMatrix.from_array(W), block_elements=3)
    >>> bool(np.array_equal(G, W.T @ W))
    True
    """
    from .blas import blas_single_thread

    step = block_elements or BLOCK_BYTES // 8
    size = min(m.shape)
    n_threads = intra_threads(threads)
    g: np.ndarray = np.zeros((size, size), dtype=dtype)
    buf: list = []  # a product buffer, only when CBLAS is not at hand
    scan = _Scan(where)
    pending: list = []  # the tiles of the block ``held``, being added by the pool
    held = None
    pool = _tile_pool(n_threads) if n_threads > 1 else None
    try:
        with blas_single_thread():
            for block in scan.blocks(m, step):  # the next block is decoded while the pool adds the last
                for fut in pending:  # widened only once the last is done: one float64 block at a time
                    fut.result()
                pending, held = [], None
                b: np.ndarray = np.asarray(block, dtype=dtype)
                held = b
                tasks = _tile_tasks(g, b, panel or PANEL)
                if tasks is None:
                    _add_gram(g, b, buf)
                elif pool is None:
                    for task in tasks:
                        task()
                else:
                    pending = [pool.submit(task) for task in tasks]
                del b
    finally:  # never free a block (or g) while a tile still reads it
        for fut in pending:
            fut.result()
        del held
        if pool is not None:
            pool.shutdown()
    buf.clear()
    note = scan.finish(m.size)
    _mirror_upper(g)
    return g, note


@functools.cache
def _tpqrt() -> Callable[..., None] | None:
    """LAPACK ``dtpqrt`` (64-bit integers) of the OpenBLAS numpy ships, via ctypes, or None.

    ctypes releases the GIL for the call; scipy's wrapper holds it, and one call on an 8192-wide R
    takes about a second, so every other Python thread (another layer's block decoding, the
    engine's scheduling) stalled meanwhile.
    """
    from .blas import numpy_openblas

    for _, lib in numpy_openblas():
        fn = getattr(lib, "scipy_dtpqrt_64_", None) or getattr(lib, "dtpqrt_64_", None)
        if fn is not None:
            fn.restype = None
            return fn
    return None


def _absorb(r: np.ndarray, b: np.ndarray, nb: int, t: np.ndarray, work: np.ndarray) -> None:
    """``R ← the R of QR([R; b])`` in place (``dtpqrt`` with l = 0; ``b`` Fortran-ordered float64, destroyed)."""
    import ctypes

    fn = _tpqrt()
    if fn is None:
        from scipy.linalg.lapack import dtpqrt

        out, _, _, info = dtpqrt(0, nb, r, b, overwrite_a=1, overwrite_b=1)
        if out is not r:  # pragma: no cover - r is Fortran-ordered float64, so updated in place
            r[...] = out
    else:
        i64 = ctypes.c_int64
        rows, n = b.shape
        status = i64(0)
        fn(ctypes.byref(i64(rows)), ctypes.byref(i64(n)), ctypes.byref(i64(0)), ctypes.byref(i64(nb)),
           r.ctypes.data_as(ctypes.c_void_p), ctypes.byref(i64(max(1, n))), b.ctypes.data_as(ctypes.c_void_p),
           ctypes.byref(i64(max(1, rows))), t.ctypes.data_as(ctypes.c_void_p), ctypes.byref(i64(nb)),
           work.ctypes.data_as(ctypes.c_void_p), ctypes.byref(status))
        info = status.value
    if info != 0:  # pragma: no cover - only on bad arguments
        raise np.linalg.LinAlgError(f"dtpqrt failed (info={info})")


def streamed_r(m: StoredMatrix, block_elements: int | None = None,
               stop: threading.Event | None = None) -> np.ndarray | None:
    """Triangular factor R (M×M, Fortran order) of a QR of W (or Wᵀ when rows < cols), streamed over blocks.

    R starts at zero and absorbs one block at a time in place with LAPACK's
    triangular-pentagonal QR (``dtpqrt``: the QR of ``[R; W_b]``, R overwritten),
    so the memory is R and one block. R has the singular values of W.
    None when ``stop`` is set before the last block (see :func:`blocked_esd`).
    """
    step = block_elements or BLOCK_BYTES // 8
    size = min(m.shape)
    r = np.zeros((size, size), dtype=np.float64, order="F")
    nb = max(1, min(64, size))
    t = np.empty((nb, size), dtype=np.float64, order="F")
    work = np.empty(nb * size, dtype=np.float64)
    for block in iter_blocks(m, step):
        if stop is not None and stop.is_set():
            return None
        _absorb(r, np.asfortranarray(block, dtype=np.float64), nb, t, work)
    return r


def streamed_singular_values(m: StoredMatrix, block_elements: int | None = None) -> np.ndarray:
    """Singular values of ``m`` (descending) from :func:`streamed_r`, in M×M memory."""
    from scipy.linalg import svdvals

    r = streamed_r(m, block_elements)
    assert r is not None  # no stop event
    return svdvals(r, overwrite_a=True, check_finite=False)


#: The fallback refines at most this many small eigenvalues by Lanczos on R (more: the full SVD of R).
SMALL_END_MAX = 32
#: Below this size the fallback always takes the full SVD of R (it is cheap there).
SMALL_END_MIN = 256
#: The refined singular values must lie within this factor of each other (see :func:`smallest_singular_values`).
SMALL_END_SPREAD = 100.0


def smallest_singular_values(r: np.ndarray, k: int) -> np.ndarray | None:
    """The ``k`` smallest singular values of the triangular ``r`` (ascending), or None where this route fails.

    Lanczos (ARPACK, ``tol=0``, a fixed start vector) on (RᵀR)⁻¹, applied as two
    triangular solves: its largest eigenvalues μ are 1/σ² of the smallest σ.
    The solves are backward stable, so each σ has the SVD's absolute accuracy
    (a few ε·σmax), not the Gram route's (√ε·σmax for tiny σ). A solve's error
    is relative to the largest μ, so the k values must lie within a factor
    ``SMALL_END_SPREAD`` of each other. None when they do not, R has a zero on
    its diagonal, a solve overflows, or ARPACK does not converge.
    """
    from scipy.linalg import solve_triangular
    from scipy.sparse.linalg import ArpackError, LinearOperator, eigsh

    n = r.shape[0]
    if not 0 < k < n - 1 or not np.all(np.diag(r)):
        return None

    def apply(x: np.ndarray) -> np.ndarray:
        y = solve_triangular(r, x, trans="T", check_finite=False)
        return solve_triangular(r, y, check_finite=False)

    op = LinearOperator((n, n), matvec=apply, dtype=np.float64)
    v0 = np.cos(np.arange(n) * 0.7 + 0.3)  # fixed: the result does not depend on a random start
    try:
        with np.errstate(all="ignore"):
            mu = eigsh(op, k=k, which="LA", tol=0, v0=v0, ncv=min(n - 1, max(2 * k + 1, 24)),
                       maxiter=50, return_eigenvectors=False)  # ~25 solves when it converges
    except (ArpackError, np.linalg.LinAlgError, ValueError):
        return None
    if not np.all(np.isfinite(mu)) or np.any(mu <= 0) or mu.max() > SMALL_END_SPREAD ** 2 * mu.min():
        return None
    return np.sort(1.0 / np.sqrt(mu))


def fallback_evals(m: StoredMatrix, ev: np.ndarray, block_elements: int | None = None,
                   r: np.ndarray | None = None) -> np.ndarray:
    """Eigenvalues (ascending) of an ill-conditioned ``m`` from its streamed R factor and its Gram eigenvalues ``ev``.

    The Gram eigenvalues above ``GRAM_SAFE_RATIO``·λmax are kept (their absolute
    error is a few ε·λmax, as the SVD's); the ``k`` at or below it are replaced by
    the squares of R's ``k`` smallest singular values (:func:`smallest_singular_values`),
    so ``sv_min`` and the rank numbers are those of the SVD, for a fraction of its
    cost. Where more than ``SMALL_END_MAX`` are below, R is small
    (< ``SMALL_END_MIN``) or that route fails: the squares of all of R's singular
    values (LAPACK ``gesdd``), as before. ``r``: :func:`streamed_r` of ``m`` when already computed.
    """
    from scipy.linalg import svdvals

    if r is None:
        r = streamed_r(m, block_elements)
    assert r is not None  # no stop event
    top = float(ev[-1]) if ev.size else 0.0
    k = int(np.count_nonzero(ev <= top * GRAM_SAFE_RATIO))
    if top > 0 and r.shape[0] >= SMALL_END_MIN and k <= SMALL_END_MAX:
        small = smallest_singular_values(r, k)
        if small is not None:
            e = ev.astype(np.float64)  # a copy
            e[:k] = small * small
            return np.sort(e)
    sv = svdvals(r, overwrite_a=True, check_finite=False)
    return np.sort(sv * sv)


def blocked_esd(m: StoredMatrix, N: int, where: str = "", fast: bool = False,
                block_elements: int | None = None, threads: int | None = None,
                spare: Callable[[], bool] | None = None) -> tuple[ESD, str]:
    """ESD of one large matrix in bounded memory, and the dtype note.

    The same numbers as :func:`htsr.spectral.esd.compute_esd` on the whole
    matrix, to rounding: eigenvalues of the block-summed Gram matrix; when
    λmin/λmax ≤ ``GRAM_SAFE_RATIO`` the squared singular values of the streamed
    R factor instead (``fast``: float32, never a fallback unless all zero).
    ``threads`` (None or 0: one per core) add the Gram matrix's tiles
    (:func:`blocked_gram`); the result does not depend on it.

    ``spare()`` (the engine's) says whether a core would otherwise stay idle
    to the end of the run, e.g. while the last layer's single-threaded
    eigensolver runs alone: from the moment it does (looked at every
    ``SPARE_POLL`` seconds while the eigensolver runs), the streamed R of the
    fallback is computed beside the eigensolver, before it is known to be
    needed, and dropped when it is not (its thread stops after the block it
    is absorbing, without holding this layer up). Same R, same numbers; on an
    ill-conditioned last layer the fallback no longer runs alone after the
    eigensolver.

    Examples
    --------
    >>> W = np.diag([3.0, 2.0, 1.0])
    >>> blocked_esd(StoredMatrix.from_array(W), N=3, block_elements=2)[0].evals
    array([1., 4., 9.])
    """
    dtype = np.float32 if fast else np.float64
    g, note = blocked_gram(m, where, dtype, block_elements, threads)
    if fast or spare is None or not _room_for_r(m):
        ev = eigvalsh_gram(g[None])[0]
        del g
        return esd_from_gram_evals(m, ev, N, fast, block_elements), note
    solved, stop = threading.Event(), threading.Event()
    got: list = []  # the R, once streamed

    def speculate() -> None:  # R once a core is spare, unless the eigensolver finishes first
        while not solved.wait(SPARE_POLL):
            if spare():
                with contextlib.suppress(Exception):  # on an error the fallback streams it again and reports it
                    got.append(streamed_r(m, block_elements, stop))
                return

    # not joined when its R is not needed: it stops after the block it is absorbing (seconds on a wide
    # matrix) while this layer's results go on. Not a daemon: a daemon thread leaving a ctypes call
    # during interpreter shutdown can hang the exit; the exit waits for that block instead.
    side = threading.Thread(target=speculate, name="htsr-qr")
    side.start()
    try:
        ev = eigvalsh_gram(g[None])[0]
    except BaseException:
        stop.set()
        solved.set()
        raise
    del g
    wanted = needs_fallback(ev, fast)
    if not wanted:
        stop.set()
    solved.set()
    r = None
    if wanted:
        side.join()
        r = got[0] if got else None  # None when it never started (or failed): fallback_evals streams it
    return esd_from_gram_evals(m, ev, N, fast, block_elements, r), note


#: Seconds between two looks at the engine's ``spare()`` while a large layer's eigensolver runs.
SPARE_POLL = 0.5


def _room_for_r(m: StoredMatrix) -> bool:
    """Whether the OS has memory for an M×M float64 R and two blocks beside the eigensolver (unknown: yes)."""
    from .matrices import available_memory

    size = min(m.shape)
    free = available_memory()
    return free is None or free > 8 * size * size + 4 * BLOCK_BYTES


def needs_fallback(ev: np.ndarray, fast: bool = False) -> bool:
    """Whether the Gram eigenvalues ``ev`` (ascending) call for the streamed-QR fallback of :func:`blocked_esd`."""
    top = ev[-1] if ev.size else 0.0
    return bool(top <= 0 or (not fast and ev[0] <= top * GRAM_SAFE_RATIO))


def esd_from_gram_evals(m: StoredMatrix, ev: np.ndarray, N: int, fast: bool = False,
                        block_elements: int | None = None, r: np.ndarray | None = None) -> ESD:
    """The ESD from the Gram eigenvalues ``ev`` of ``m``, with the streamed-QR fallback of :func:`blocked_esd`
    (``r``: its R factor when already computed)."""
    e = fallback_evals(m, ev, block_elements, r) if needs_fallback(ev, fast) else ev.astype(np.float64, copy=False)
    e = np.clip(e, 0.0, None)
    sv = np.sqrt(e)
    return ESD(evals=e, sv_max=float(sv[-1]), sv_min=float(sv[0]), rank_loss=int(sv.size - rank_count(sv, N)))


def blocked_esd_torch(m: StoredMatrix, N: int, where: str = "", device: str = "cuda",
                      block_elements: int | None = None) -> tuple[ESD, str]:
    """:func:`blocked_esd` with the Gram matrix summed and diagonalized by torch on ``device`` (float64).

    Blocks are decoded on the CPU (bfloat16 → float32), checked, copied to the
    device and added with ``addmm_``; the M×M float64 Gram matrix lives on the
    device only. The fallback (streamed QR) runs on the CPU.
    """
    import torch

    step = block_elements or BLOCK_BYTES // 8
    size = min(m.shape)
    g = torch.zeros((size, size), dtype=torch.float64, device=device)
    scan = _Scan(where)
    for block in scan.blocks(m, step):
        b = torch.from_numpy(np.ascontiguousarray(block)).to(device).to(torch.float64)
        g.addmm_(b.T, b)
        del b
    note = scan.finish(m.size)
    ev = torch.linalg.eigvalsh(g).cpu().numpy()
    del g
    return esd_from_gram_evals(m, ev, N, False, block_elements), note
