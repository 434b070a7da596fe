"""The optional per-layer columns: Marchenko–Pastur fit, randomized ESD and traps, detX.

:func:`layer_extras` is called by the engine for each layer (or conv slice with
``pool=False``) when ``mp_fit``, ``randomize`` or ``detX`` is on. It is pure:
arrays in, a :class:`LayerExtras` out.

Randomization uses ``default_rng([seed, layer_id, slice_id])``, so a table is
identical run to run and independent of threading. The randomized ESD is
computed in float32 (its use is statistical); as the reference, layers with
fewer than 100 eigenvalues per matrix use 5 shuffles (replicas) for the
randomized ESD and its fit, and ``rand_distance`` compares the first one with
the original ESD.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .marchenko_pastur import MPFit, detx, fit_mp
from .randomize import jensen_shannon, layer_rng, permutations, shuffle_stack, slice_evals
from .traps import analyze_spikes

SMALL_LAYER = 100  # matrices with fewer eigenvalues get REPLICAS shuffles, as the reference
REPLICAS = 5

_MP_KEYS = ("sigma_mp", "num_spikes", "mp_softrank", "W_scale", "bulk_max", "bulk_min")


@dataclass
class LayerExtras:
    """Extra columns of one row, its traps and its randomized eigenvalues.

    Attributes
    ----------
    columns : dict
        Report columns (``sigma_mp`` …, ``max_rand_eval`` …, ``detX_num`` …).
    traps : list of dict
        One per trap: ``trap_eval, bulk_max, ratio, entries`` (and ``slice_id`` for a pooled conv layer),
        plus ``components`` (the trap's rank-one component at each entry, used by
        :func:`htsr.remove_traps`; not a report column). Entry values are those of the
        analyzed matrix (conv2d slices include the reference's sqrt(1/2) factor).
    rand_evals : ndarray or None
        Sorted randomized eigenvalues (all replicas) when ``randomize``.
    """

    columns: dict = field(default_factory=dict)
    traps: list = field(default_factory=list)
    rand_evals: np.ndarray | None = None


def _safe_fit(evals: np.ndarray, Q: float, M: int) -> MPFit | None:
    try:
        return fit_mp(evals, Q, M)
    except (ValueError, FloatingPointError, ArithmeticError):
        return None


def _nan_fit_columns(prefix: str) -> dict:
    return {f"{prefix}{k}": (None if k == "num_spikes" else float("nan")) for k in _MP_KEYS}


def layer_extras(stack: np.ndarray, evals: np.ndarray, g, config, layer_key: tuple[int, int] = (0, 0)) -> LayerExtras:
    """MP fit, randomized ESD with trap report, detX for one row.

    Parameters
    ----------
    stack : ndarray, shape (rf, rows, cols)
        The row's matrices (conv slices already scaled), float64.
    evals : ndarray
        Sorted eigenvalues of ``stack`` (pooled).
    g : Geometry
        N, M, rf, Q of the layer.
    config : AnalysisConfig
        Uses ``mp_fit``, ``randomize``, ``detX``, ``seed``.
    layer_key : (layer_id, slice_id)
        Seeds the generator.

    Returns
    -------
    LayerExtras
    """
    out = LayerExtras()
    evals = np.asarray(evals, dtype=np.float64)
    if config.mp_fit:
        fit = _safe_fit(evals, g.Q, g.M)
        out.columns.update(fit.columns() if fit else _nan_fit_columns(""))
    if config.detX:
        num, val = detx(evals)
        out.columns.update(detX_num=num, detX_val=val)
    if config.randomize:
        _randomize(stack, evals, g, config.seed, layer_key, out)
    return out


def _randomize(stack: np.ndarray, evals: np.ndarray, g, seed: int, layer_key: tuple[int, int], out: LayerExtras) -> None:
    layer_id, slice_id = layer_key
    rng = layer_rng(seed, layer_id, slice_id)
    shuffled = shuffle_stack(stack, rng, dtype=np.float32)
    first = slice_evals(shuffled)
    first_evals = np.sort(np.concatenate(first)).astype(np.float64)
    replicas = [first_evals]
    if g.M < SMALL_LAYER:
        for _ in range(REPLICAS - 1):
            replicas.append(np.concatenate(slice_evals(shuffle_stack(stack, rng, dtype=np.float32))).astype(np.float64))
    rand_evals = np.sort(np.concatenate(replicas)) if len(replicas) > 1 else first_evals
    out.rand_evals = rand_evals
    max_rand = float(rand_evals[-1])
    lam_max = float(evals[-1])
    cols = out.columns
    cols["max_rand_eval"] = max_rand
    cols["rand_distance"] = jensen_shannon(evals, first_evals) if first_evals.size == evals.size else float("nan")
    cols["ww_softrank"] = max_rand / lam_max if lam_max > 0 else float("nan")
    cols["ww_maxdist"] = lam_max - max_rand
    fit = _safe_fit(rand_evals, g.Q, g.M)
    cols.update(fit.columns("rand_") if fit else _nan_fit_columns("rand_"))
    mean_evals = []
    num_traps = 0
    mean_spike = False
    if fit is not None:
        rows, ncols = stack.shape[1:]
        for s, ev in enumerate(first):
            k = int(np.count_nonzero(ev.astype(np.float64) > fit.edge))
            orig = stack[s]

            def perm_fn(s=s):
                return permutations(stack.shape, layer_rng(seed, layer_id, slice_id))[s]

            spikes = analyze_spikes(shuffled[s], orig, perm_fn, k)
            if np.isfinite(spikes.mean_eval):
                mean_evals.append(spikes.mean_eval)
            mean_spike = mean_spike or spikes.mean_spike
            num_traps += len(spikes.traps)
            for trap in spikes.traps:
                row = {"trap_eval": trap["trap_eval"], "bulk_max": fit.bulk_max,
                       "ratio": trap["trap_eval"] / fit.bulk_max if fit.bulk_max > 0 else float("nan"),
                       "entries": trap["entries"], "components": trap["components"]}
                if stack.shape[0] > 1:
                    row["slice_id"] = s
                out.traps.append(row)
    cols["num_traps"] = num_traps if fit is not None else None
    cols["rand_mean_spike"] = mean_spike
    cols["rand_mean_spike_eval"] = max(mean_evals) if mean_evals else float("nan")
