"""Runs the per-layer pipeline: load → matrices → ESD → fits → metrics → :class:`LayerResult`.

One layer's tensor is held at a time per worker; the next tensor is read on a
background thread while the current one is computed (reading and numpy's
LAPACK calls release the GIL, so both cores stay busy). A layer that fails
gets a result with ``status='invalid'`` (bad weights) or ``'failed'`` (the fit
failed) and a ``reason``; it never stops the run.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .blas import blas_single_thread
from .blocked import memory_reason, uses_blocks
from .config import AnalysisConfig, LayerType, fit_options
from .errors import HtsrError, LayerError
from .matrices import Geometry, as_float, available_memory, check_weights, not_a_matrix_reason, slices
from .prepare import early_spectra, layer_stack, randomize_row, row_esd
from .progress import Progress
from .results import LayerResult
from .sources import Source, WeightTensor
from .sources.base import StoredMatrix
from .sources.quant import INTEGER_DTYPES, plain_storage
from .spectral.esd import ESD, compute_esd, top_esd
from .spectral.fitting import TailFit, fit_tail
from .spectral.inverse import inverse_evals
from .spectral.marchenko_pastur import detx_result, safe_fit_mp
from .spectral.metrics import norm_metrics
from .spectral.powerlaw import EVALS_THRESH, SMALL_N, PowerLawFit, fit_powerlaw
from .spectral.vectors import vector_columns
from .treatment import HTSR, Treatment

ANALYZED_TYPES = (LayerType.DENSE, LayerType.EMBEDDING, LayerType.CONV1D, LayerType.CONV2D)


@dataclass(frozen=True)
class Plan:
    """What will happen to one tensor: analyzed (reason empty) or left out (reason says why)."""

    tensor: WeightTensor
    geometry: Geometry | None
    reason: str  # '' = analyze
    is_layer: bool  # False for 1-D tensors and non-layer modules: listed by describe() only


def plan(source: Source, config: AnalysisConfig, treatment: Treatment = HTSR) -> list[Plan]:
    """Decide for every tensor whether it is analyzed, without reading any data.

    ``treatment`` gives each tensor's geometry and the eigenvalue count the gates
    see (:mod:`htsr.treatment`; the compat class passes the reference's).
    """
    out = []
    available = available_memory()  # read once from the OS; a layer that would not fit is skipped
    for t in source.tensors:
        if config.start_ids and source.kind == "module":
            t = dataclasses.replace(t, layer_id=t.layer_id + config.start_ids)
        geom = treatment.geometry(t.shape, t.layer_type)
        reason = not_a_matrix_reason(t.shape, t.layer_type)
        is_layer = reason is None or geom is not None  # an empty matrix is listed in .skipped
        if reason is None and t.layer_type not in ANALYZED_TYPES:
            reason = f"layer type {t.layer_type.value} is not analyzed"
            is_layer = False
        if reason is None and t.note:
            reason = t.note
        if reason is None and not t.storage and t.dtype in INTEGER_DTYPES and not config.integer_values:
            reason = (f"integer tensor ({t.dtype}) not dequantized: its codes are not values "
                      "(integer_values=True analyzes them as values)")
        if reason is None and not config.layers.selects(t.layer_id, t.name, t.longname, t.layer_type.value):
            reason = "not selected by the 'layers' option"
        if reason is None and geom is not None:
            what, count = treatment.gate_count(geom, config.pool)
            if count < config.min_evals:
                reason = f"fewer than min_evals={config.min_evals} eigenvalues ({what} = {count})"
            elif count > config.max_evals:
                reason = f"more than max_evals={config.max_evals} eigenvalues ({what} = {count})"
            elif config.max_N is not None and config.max_N < geom.N:
                reason = (f"N = {geom.N} exceeds max_N={config.max_N} "
                          "(max_N=None, or --max-n none on the command line, analyzes it)")
            else:
                reason = memory_reason(t.shape, t.dtype, available, config.randomize)
        out.append(Plan(t, geom, reason or "", is_layer))
    return out


def _identity(t: WeightTensor, g: Geometry, slice_id: int | None = None) -> dict:
    """The identity fields of a :class:`LayerResult` (a per-slice row has rf = 1 and M eigenvalues)."""
    ident = dict(t.identity(), N=g.N, M=g.M, rf=g.rf, num_evals=g.num_evals,
                 storage=t.storage or plain_storage(t.dtype))
    if slice_id is not None:
        ident.update(slice_id=slice_id, rf=1, num_evals=g.M)
    if t.num_components:
        ident["num_evals"] = min(int(ident["num_evals"]), t.num_components)
    return ident


def analyze_array(t: WeightTensor, g: Geometry, array: np.ndarray | StoredMatrix, config: AnalysisConfig,
                  esd_fn: Callable[[np.ndarray, int], ESD] = compute_esd, device: str = "cpu",
                  treatment: Treatment = HTSR, spare: Callable[[], bool] | None = None) -> list[LayerResult]:
    """The results of one layer: one, or one per conv slice with ``pool=False``.

    A :class:`~htsr.sources.base.StoredMatrix` (a large dense layer) is analyzed
    block by block (:mod:`htsr.blocked`), never copied whole to float64;
    ``randomize`` then decodes it whole (it shuffles every element), and what
    needs every element for its own numbers (``inverse``, ``vectors``, a
    treatment with ``needs_all_elements``) decodes it before anything else.
    ``spare``: the engine's idle-core test, passed to :func:`~htsr.blocked.blocked_esd`.
    """
    if isinstance(array, StoredMatrix) and (treatment.needs_all_elements or config.inverse or config.vectors):
        array = array.decoded()
    blocked = None
    top_m = False
    early = None
    groups: list
    if isinstance(array, StoredMatrix):
        from .blocked import blocked_esd, blocked_esd_torch

        if device == "cpu" and config.randomize and _beside(config, array.shape):
            stack = array.decoded()[None]
            (blocked, note), early = _esd_beside_shuffle(
                lambda: blocked_esd(array, g.N, t.where, fast=config.fast, threads=config.workers or None),
                stack, t, g, config, treatment, g.M)
            groups = [(None, stack)]
        else:
            if device == "cpu":
                blocked, note = blocked_esd(array, g.N, t.where, fast=config.fast, threads=config.workers or None,
                                            spare=spare)
            else:
                blocked, note = blocked_esd_torch(array, g.N, t.where, device=device)
            groups = [(None, array.decoded()[None] if config.randomize else None)]
    else:
        W, note = as_float(array, t.where)
        stack, top_m = layer_stack(W, t, g, config, treatment)
        groups = treatment.row_groups(stack, config.pool, top_m)
    out = []
    for slice_id, sub in groups:
        if blocked is not None:
            esd = row_esd(blocked, g, top_m)
        elif config.randomize and device == "cpu" and _beside(config, sub.shape):
            n = g.M if top_m else sub.shape[0] * min(sub.shape[1:])
            raw, early = _esd_beside_shuffle(functools.partial(esd_fn, sub, g.N), sub, t, g, config, treatment, n,
                                             slice_id)
            esd = row_esd(raw, g, top_m)
        else:
            early = None
            esd = row_esd(esd_fn(sub, g.N), g, top_m)
        if config.inverse:  # the reference's inverse ESD (spectral/inverse.py); sv columns stay those of W
            esd = dataclasses.replace(esd, evals=inverse_evals([esd_fn(sub[k:k + 1], g.N).evals
                                                                for k in range(sub.shape[0])]))
        if t.num_components and t.num_components < esd.evals.size:  # a PEFT row: its rank-r view
            esd = top_esd(esd.evals, t.num_components, g.N, sv_max=esd.sv_max)
        evals = esd.evals
        fit: PowerLawFit | TailFit
        if config.fit == "PL" and config.pl_package == "ww" and config.xmax is None and not config.fix_fingers:
            fit = fit_powerlaw(evals, curves=config.keep_esd, small_n=treatment.small_n)
        else:  # the reference's other fits: TPL, the powerlaw package's method, xmax, fix_fingers
            fit = fit_tail(evals, **fit_options(config))
        if fit.status == "failed" and not np.isnan(treatment.failed_fit_value):  # e.g. the reference's −1
            v = treatment.failed_fit_value
            fit = dataclasses.replace(fit, alpha=v, D=v, xmin=v)
        randomized = traps = None
        if config.randomize:
            randomized, traps = randomize_row(sub, evals, g, config.seed, t.layer_id, slice_id, treatment, early)
        ident = treatment.row_identity(_identity(t, g, slice_id), g, int(evals.size))
        out.append(LayerResult(
            **ident,
            status=fit.status,
            reason="; ".join(r for r in (fit.reason, note, small_sample_note(fit, evals, treatment.small_n)) if r),
            esd=esd,
            fit=fit,
            metrics=norm_metrics(evals, fit.alpha, g.N, tolerance=config.tolerance),
            mp=safe_fit_mp(evals, g.Q, g.M) if config.mp_fit else None,
            randomized=randomized,
            traps=traps,
            detx=detx_result(evals) if config.detX else None,
            vectors=(vector_columns(sub, fit.num_pl_spikes if np.isfinite(fit.xmin) else None)
                     if config.vectors else None),
        ))
    return out


#: From this many elements on, a randomized layer's own ESD is computed on a helper thread beside its
#: shuffle (``workers`` other than 1): a 2048² matrix or larger.
BESIDE_MIN_ELEMENTS = 1 << 22


def _beside(config: AnalysisConfig, shape: tuple[int, ...]) -> bool:
    """Whether a randomized row of ``shape`` splits its work over two threads (:func:`_esd_beside_shuffle`)."""
    return config.workers != 1 and int(np.prod(shape, dtype=np.int64)) >= BESIDE_MIN_ELEMENTS


def _esd_beside_shuffle(esd: Callable[[], Any], stack: np.ndarray, t: WeightTensor, g: Geometry,
                        config: AnalysisConfig, treatment: Treatment, n_evals: int,
                        slice_id: int | None = None) -> tuple[Any, tuple[int, tuple]]:
    """A large row's own ESD (``esd()``) on a helper thread while this one shuffles ``stack`` (``randomize``).

    The two share nothing but the read-only matrices and each runs single-threaded BLAS, so the
    bits are those of computing them one after the other; the row (e.g. a 25088×4096 classifier,
    the largest of its run) takes two cores instead of running alone on one. The shuffled
    spectra assume ``n_evals`` eigenvalues (PEFT rows: their rank); :func:`randomize_row` computes
    them again if the ESD's count asks for another number of replicas.
    """
    if t.num_components:
        n_evals = min(n_evals, t.num_components)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="htsr-esd") as side:
        done = side.submit(esd)
        try:
            early = early_spectra(stack, g, n_evals, config.seed, t.layer_id, slice_id, treatment)
        except BaseException:
            done.result()  # the ESD's error first, as when it ran first
            raise
        return done.result(), early


#: Start of the reason that marks a row whose alpha comes from fewer than SMALL_N eigenvalues.
SMALL_SAMPLE_NOTE = f"fewer than {SMALL_N} eigenvalues"


def small_sample_note(fit: Any, evals: np.ndarray, small_n: int) -> str:
    """The row's note when the power-law fit saw fewer than 20 eigenvalues, where htsr.analyze and the
    compat class use different estimators (docs/compat.md); empty otherwise.

    ``small_n`` is the treatment's (:attr:`~htsr.treatment.Treatment.small_n`): below it the fit used the
    reference's small-sample search (the compat class), above it htsr's exhaustive fit.
    """
    n = int(np.count_nonzero(evals > EVALS_THRESH))
    if type(fit) is not PowerLawFit or fit.status != "success" or n >= SMALL_N:  # the plain fit only
        return ""
    if n < small_n:
        return (f"{SMALL_SAMPLE_NOTE} ({n}): alpha from the reference's small-sample estimator "
                "(htsr.analyze uses its exhaustive fit here and gives a different alpha)")
    return (f"{SMALL_SAMPLE_NOTE} ({n}): alpha from htsr's exhaustive fit (the WeightWatcher compat class uses "
            "the reference's small-sample estimator here and gives a different alpha)")


def analyze_plan(p: Plan, array: np.ndarray | StoredMatrix | Exception, config: AnalysisConfig,
                 esd_fn: Callable[[np.ndarray, int], ESD] = compute_esd, device: str = "cpu",
                 treatment: Treatment = HTSR, spare: Callable[[], bool] | None = None) -> list[LayerResult]:
    """:func:`analyze_array` for a planned tensor whose read gave ``array`` (or the read's error).

    Never raises for a bad layer: bad weights or a failed read give one ``invalid``
    result, an unexpected error one ``failed`` result, each with the reason.
    """
    t, g = p.tensor, p.geometry
    assert g is not None
    try:
        if isinstance(array, Exception):
            raise array
        # degenerate layers (underflowing, constant) make numpy warn; their rows say what happened
        with np.errstate(all="ignore"):
            return analyze_array(t, g, array, config, esd_fn, device, treatment, spare)
    except HtsrError as exc:  # LayerError (bad weights) or a read error
        return [LayerResult(**_identity(t, g), status="invalid", reason=str(exc))]
    except MemoryError:
        return [LayerResult(**_identity(t, g), status="invalid", reason="out of memory computing this layer")]
    except Exception as exc:  # a broken layer never stops the run
        return [LayerResult(**_identity(t, g), status="failed", reason=f"{exc.__class__.__name__}: {exc}")]


def load_tensor(p: Plan, blocks: bool = False) -> np.ndarray | StoredMatrix | Exception:
    """Read a planned tensor; a failure comes back as the exception (reported on the layer's row).

    With ``blocks``, a large dense matrix comes back as a :class:`StoredMatrix` (read in blocks later).
    """
    try:
        if blocks and uses_blocks(p.tensor.shape):
            t = p.tensor
            return t.stored() if t.stored is not None else StoredMatrix.from_array(t.load())
        return p.tensor.load()
    except HtsrError as exc:
        return exc
    except MemoryError:
        return LayerError(f"out of memory reading {p.tensor.where}")
    except Exception as exc:
        return LayerError(f"cannot read {p.tensor.where}: {exc.__class__.__name__}: {exc}")


def _worker_count(config: AnalysisConfig, n_layers: int) -> int:
    import os

    wanted = config.workers or os.cpu_count() or 1
    return max(1, min(wanted, n_layers))


def run(plans: list[Plan], config: AnalysisConfig, progress: Progress | None = None,
        device: str = "cpu", treatment: Treatment = HTSR) -> Iterator[list[LayerResult]]:
    """Analyze the planned layers; yield their outputs in plan order.

    CPU: ``config.workers`` threads (0: one per core) each analyze a whole
    layer, with BLAS pinned to one thread, while one reader thread loads the
    next tensors ahead (numpy's matmul and LAPACK calls release the GIL, so the
    cores stay busy). With several workers the most expensive layers start
    first (:func:`submission_order`), and a large randomized layer computes its
    own ESD on a helper thread beside its shuffle. At most ``workers + 1`` tensors are held
    at a time; a slow layer does not stall the others (their outputs wait, in
    plan order).
    BLAS is pinned to one thread on every CPU path (also ``workers=1``), so each
    layer is computed by exactly the same single-threaded code: results are
    bit-identical from run to run, for any number of workers, and whatever
    BLAS threading the calling process has set.

    CUDA: consecutive layers of the same shape are read together and their
    eigenvalues computed in one float64 batch on the GPU (see
    :mod:`htsr.accel`; ``fast`` does not apply there); fits and metrics stay
    on the CPU.
    """
    todo = [p for p in plans if not p.reason]
    if not todo:
        return
    if device == "cuda":
        yield from _run_cuda(todo, config, progress, treatment)
        return
    esd_fn: Callable[[np.ndarray, int], ESD] = compute_esd
    if config.fast:
        esd_fn = functools.partial(compute_esd, fast=True)
    workers = _worker_count(config, len(todo))
    with blas_single_thread():
        yield from _run_threads(todo, config, progress, esd_fn, workers, treatment)


def layer_cost(p: Plan, randomize: bool = False) -> float:
    """A layer's estimated arithmetic, for the order in which :func:`run` starts layers (relative units).

    Per matrix (``rf`` of them, N×M with M ≤ N): the Gram matrix (M²·N) and its eigenvalues (~M³);
    ``randomize`` doubles that (a shuffled copy's Gram and eigenvalues) and adds the shuffle (N·M).
    A tensor without a geometry counts its elements.
    """
    g = p.geometry
    if g is None:
        return float(np.prod(p.tensor.shape, dtype=float))
    one = float(g.M) * g.M * (g.N + g.M)
    if randomize:
        one = 2.0 * one + 8.0 * g.N * g.M
    return one * max(g.rf, 1)


def submission_order(todo: list[Plan], randomize: bool = False) -> list[int]:
    """Indices of ``todo`` in the order the workers start them: the most expensive first.

    Longest-processing-time-first: the largest layer (e.g. a 25088×4096 classifier at the
    end of the plan) no longer runs alone on one worker after the others have finished the
    small layers. Ties keep plan order (the sort is stable), so same-shaped layers run in
    plan order. Results do not depend on this order (each layer is computed alone with
    single-threaded BLAS, its shuffles seeded by its own id).
    """
    costs = [layer_cost(p, randomize) for p in todo]
    return sorted(range(len(todo)), key=lambda i: -costs[i])


def _run_threads(todo: list[Plan], config: AnalysisConfig, progress: Progress | None,
                 esd_fn: Callable[[np.ndarray, int], ESD], workers: int,
                 treatment: Treatment = HTSR) -> Iterator[list[LayerResult]]:
    """``workers`` layers at once; one reader thread keeps at most ``workers + 1`` tensors loaded.

    Layers are started in :func:`submission_order` (the most expensive first), and one is
    started whenever fewer than ``workers + 1`` layers are unfinished, so one slow layer
    never idles the other workers and the largest layer does not run alone at the end. The
    reader reads in that same order. Finished outputs (no tensors, only rows and
    eigenvalues) wait for their turn and are yielded in plan order; ``progress`` advances
    as each layer finishes.
    """
    import threading
    from concurrent.futures import FIRST_COMPLETED, wait

    lock = threading.Lock()
    load = {"running": 0, "waiting": len(todo)}  # layers being analyzed, layers not started yet

    def spare() -> bool:
        """Whether a worker is idle and no layer is left to start (a core would idle to the end)."""
        with lock:
            return workers > 1 and load["waiting"] == 0 and load["running"] < workers

    def task(p: Plan, loading: Any) -> list[LayerResult]:
        array = loading.result()
        with lock:
            load["running"] += 1
            load["waiting"] -= 1
        try:
            return analyze_plan(p, array, config, esd_fn, treatment=treatment, spare=spare)
        finally:
            with lock:
                load["running"] -= 1

    order = submission_order(todo, config.randomize) if workers > 1 else list(range(len(todo)))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="htsr-read") as reader, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="htsr-work") as pool:
        unfinished: dict[Any, int] = {}  # future → plan index
        finished: dict[int, Any] = {}  # plan index → its done future, until yielded
        nxt = 0
        for head in range(len(todo)):
            while head not in finished:
                for fut in [f for f in unfinished if f.done()]:
                    k = unfinished.pop(fut)
                    finished[k] = fut
                    if progress is not None:
                        progress.update(todo[k].tensor.longname)
                if head in finished:
                    break
                while nxt < len(order) and len(unfinished) < workers + 1:
                    k = order[nxt]
                    unfinished[pool.submit(task, todo[k], reader.submit(load_tensor, todo[k], True))] = k
                    nxt += 1
                wait(list(unfinished), return_when=FIRST_COMPLETED)
            yield finished.pop(head).result()


def _batches(todo: list[Plan], budget: int) -> list[list[Plan]]:
    """Consecutive plans of one shape, each batch at most ``budget`` float64 bytes (one plan at least)."""
    out: list[list[Plan]] = []
    size = 0
    for p in todo:
        nbytes = 8 * int(np.prod(p.tensor.shape))
        if out and out[-1][0].tensor.shape == p.tensor.shape and size + nbytes <= budget \
                and not uses_blocks(p.tensor.shape):  # a large layer goes alone, in blocks
            out[-1].append(p)
            size += nbytes
        else:
            out.append([p])
            size = nbytes
    return out


def _gpu_stack(p: Plan, array: np.ndarray | Exception, config: AnalysisConfig,
               treatment: Treatment = HTSR) -> np.ndarray | None:
    """The matrices of a layer for a GPU batch, or None when it cannot be batched.

    A failed read, invalid weights or a per-slice run (``pool=False``) are left to
    :func:`analyze_plan`, which reports or computes them on their own.
    """
    if isinstance(array, Exception):
        return None
    try:
        src, _ = check_weights(array, p.tensor.where)  # no float64 copy: analyze_plan makes its own
    except HtsrError:
        return None
    # a plain float matrix travels as stored (widened exactly on the GPU); others as float64
    raw = src.ndim == 2 and src.dtype in (np.float16, np.float32, np.float64)
    if treatment.top_m(p.tensor.layer_type, src.ndim):  # e.g. the reference's Conv1d: analyze_plan's own route
        return None
    stack = slices(src if raw else src.astype(np.float64), p.tensor.layer_type, config.conv2d_norm)
    return None if stack.shape[0] > 1 and not config.pool else stack


def _run_cuda(todo: list[Plan], config: AnalysisConfig, progress: Progress | None,
              treatment: Treatment = HTSR) -> Iterator[list[LayerResult]]:
    from .accel import GPU_BATCH_BYTES, batched_esds, compute_esd_cuda

    batches = _batches(todo, GPU_BATCH_BYTES)

    def load_all(batch: list[Plan]) -> list:
        return [load_tensor(p, blocks=True) for p in batch]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="htsr-read") as reader:
        pending = reader.submit(load_all, batches[0])
        for k, batch in enumerate(batches):
            arrays = pending.result()
            if k + 1 < len(batches):
                pending = reader.submit(load_all, batches[k + 1])
            esds: list[ESD | None] = [None]
            if len(batch) > 1:
                stacks = [_gpu_stack(p, a, config, treatment) for p, a in zip(batch, arrays)]
                esds = batched_esds(stacks, [p.geometry.N if p.geometry else 0 for p in batch])
            for p, array, esd in zip(batch, arrays, esds):
                esd_fn = compute_esd_cuda if esd is None else (lambda sub, N, _e=esd: _e)
                out = analyze_plan(p, array, config, esd_fn, device="cuda", treatment=treatment)
                if progress is not None:
                    progress.update(p.tensor.longname)
                yield out
            del arrays
