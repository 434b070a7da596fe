"""The reference's two "fix the fingers" procedures for a power-law tail.

A *finger* is a handful of eigenvalues far out in the tail (a finite-size
effect) that drags the fitted exponent up. The reference offers two remedies,
reproduced here as pure functions:

``xmin_peak``
    Restrict the xmin candidates to a window at the mode of the ESD on a log
    scale: the histogram of log10 λ (λ above the threshold) in 100 bins; its
    fullest bin's left edge p = 10^edge (the first such bin). The window the
    reference passes on is ``(log10(0.95·p), xmin_max)`` with ``xmin_max``
    defaulting to 1.5·p. The lower end is a base-10 logarithm while the upper
    end is in eigenvalue units; the fit uses min(·) and max(·) of the pair, so
    in effect every eigenvalue up to ``xmin_max`` (down to the logarithm,
    usually negative) is a candidate. This is the reference's behaviour and
    its numbers; :func:`xmin_peak_window` returns that pair unchanged.

``clip_xmax``
    Refit with the k largest eigenvalues removed, k = 2, 3, … up to
    ``max_fingers − 1``; stop at the first k whose exponent is more than
    ``finger_thresh`` below the unclipped one (that fit wins, with
    ``num_fingers = k − 1``), or as soon as an exponent drops to 2 or below
    (then the unclipped fit stands, ``num_fingers = 0``). Three further clipped
    fits are made after the loop as a consistency check; they change no
    number, but a fit that cannot be made (too few values) fails the layer,
    as in the reference. ``max_fingers`` is replaced by 10 unless it is at
    least half the number of eigenvalues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_MAX_FINGERS = 10
DEFAULT_FINGER_THRESH = 1.0
MIN_ALPHA = 2.0


def xmin_peak_window(evals: np.ndarray, xmin_max: float | None = None, thresh: float = 1e-5) -> tuple[float, float]:
    """The xmin window of ``fix_fingers='xmin_peak'`` (see the module docstring).

    Parameters
    ----------
    evals : array_like
        Eigenvalues; those ≤ ``thresh`` are ignored.
    xmin_max : float, optional
        Upper end of the window (default 1.5 × the peak).

    Returns
    -------
    (float, float)
        ``(log10(0.95·peak), xmin_max)``, the pair the reference hands to its fit.

    Raises
    ------
    ValueError
        When no eigenvalue is above ``thresh``.

    Examples
    --------
    >>> lo, hi = xmin_peak_window(np.array([0.5, 1.0, 1.0, 1.0, 4.0]))
    >>> round(hi, 6)
    1.5
    """
    x = np.asarray(evals, dtype=np.float64)
    x = x[x > thresh]
    if x.size == 0:
        raise ValueError(f"no eigenvalue above {thresh:g}")
    counts, edges = np.histogram(np.log10(x), bins=100)
    peak = 10 ** edges[int(np.argmax(counts))]
    if xmin_max is None:
        xmin_max = 1.5 * peak
    return float(np.log10(0.95 * peak)), float(xmin_max)


def effective_max_fingers(max_fingers: int | None, num_evals: int) -> int:
    """The reference keeps ``max_fingers`` only when it is at least half the eigenvalue count; else 10."""
    if max_fingers is None or max_fingers < 0 or max_fingers < 0.5 * num_evals:
        return DEFAULT_MAX_FINGERS
    return int(max_fingers)


@dataclass(frozen=True)
class ClippedFit:
    """Result of :func:`clip_xmax`: the chosen fit, the number of fingers removed, and the unclipped fit."""

    best: Any
    num_fingers: int
    raw: Any


def clip_xmax(evals: np.ndarray, fit: Callable[[np.ndarray, float | None], Any], max_fingers: int = DEFAULT_MAX_FINGERS,
              finger_thresh: float = DEFAULT_FINGER_THRESH, xmax: float | None = None) -> ClippedFit:
    """The ``fix_fingers='clip_xmax'`` search (see the module docstring).

    Parameters
    ----------
    evals : ndarray, shape (n,)
        Sorted eigenvalues above the threshold.
    fit : callable
        ``fit(values, xmax)`` → an object with ``alpha``; raises ``ValueError``
        when it cannot fit (too few values).
    max_fingers : int
        Already passed through :func:`effective_max_fingers`.
    finger_thresh : float
        How far below the unclipped exponent a clipped one must fall.
    xmax : float, optional
        An upper cut-off: each clipped fit then uses the k-th largest value as
        its cut-off (as the reference does with ``xmax='force'``).

    Returns
    -------
    ClippedFit

    Raises
    ------
    ValueError
        From ``fit``, or when ``max_fingers`` < 3 leaves no clipped fit to try
        (the reference fails such layers).
    """
    x = np.asarray(evals, dtype=np.float64)
    first = fit(x, xmax)
    best, num_fingers = first, 0
    if max_fingers < 3:
        raise ValueError(f"max_fingers={max_fingers} leaves no clipped fit to try")
    last = first
    idx = 2
    for idx in range(2, max_fingers):
        cut = float(x[-idx]) if xmax is not None else None
        last = fit(x[:-idx], cut)
        if last.alpha + finger_thresh < first.alpha:
            best, num_fingers = last, idx - 1
            break
        if last.alpha <= MIN_ALPHA:
            break
    for idy in range(idx + 1, idx + 4):  # the reference's consistency check: no number changes
        data = x[:-idy]
        cut = float(np.max(data)) if (xmax is not None and data.size) else None
        check = fit(data, cut)
        if abs(check.alpha - last.alpha) > finger_thresh:
            break
    return ClippedFit(best, num_fingers, first)
