"""One entry point for every tail fit the reference offers: ``fit``, ``pl_package``, ``xmax``, ``fix_fingers``.

:func:`fit_tail` reproduces the reference's choice of procedure:

* ``pl_package='ww'`` (default): htsr's exact search (:func:`htsr.spectral.powerlaw.fit_powerlaw`);
  ``pl_package='powerlaw'``: the ``powerlaw`` package's method (:mod:`htsr.spectral.tpl`),
  whose ``xmax`` column is empty unless an ``xmax`` was given.
* ``fit='TPL'``: a truncated power law x^(−α) e^(−Λx) picks xmin and gives ``alpha`` and
  ``Lambda``; ``fit='E_TPL'`` is ``TPL`` with ``fix_fingers='xmin_peak'``.
* ``xmax='force'``: the largest eigenvalue becomes a fixed upper cut-off of the model;
  ``xmax=-k`` (any non-zero int): the k largest eigenvalues are dropped before the fit
  (an |xmax| above half the eigenvalue count is, as in the reference, used as a
  cut-off value instead).
* ``fix_fingers='xmin_peak'`` / ``'clip_xmax'``: :mod:`htsr.spectral.fingers`.

A fit that cannot be made gives ``status='failed'`` and NaN (htsr's convention; the
reference writes −1).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fingers import (
    DEFAULT_FINGER_THRESH,
    DEFAULT_MAX_FINGERS,
    clip_xmax,
    effective_max_fingers,
    xmin_peak_window,
)
from .powerlaw import EVALS_THRESH, PowerLawFit, fit_powerlaw
from .tpl import POWER_LAW, TRUNCATED_POWER_LAW, fit_candidate, fit_package

FITS = ("PL", "TPL", "E_TPL")
PL_PACKAGES = ("ww", "powerlaw")
FINGER_METHODS = ("xmin_peak", "clip_xmax")


@dataclass(frozen=True)
class TailFit(PowerLawFit):
    """A tail fit with the reference's option columns, besides :class:`PowerLawFit`'s.

    ``Lambda`` (TPL fits), ``num_fingers`` and ``raw_alpha`` (``clip_xmax``); None when the
    options do not produce them. ``xmins``, ``alphas`` and ``Ds`` hold the xmin search for
    plots when the procedure has one.
    """

    Lambda: float | None = None
    num_fingers: int | None = None
    raw_alpha: float | None = None


def is_default(fit: str = "PL", pl_package: str = "ww", xmax: Any = None, fix_fingers: Any = None) -> bool:
    """True when the options ask for htsr's plain power-law fit."""
    return fit == "PL" and pl_package == "ww" and xmax is None and not fix_fingers


def _ww_fit(values: np.ndarray, cut: float | None, thresh: float) -> Any:
    """The 'ww' fit of sorted ``values``; a cut-off keeps the values up to the one nearest to it."""
    if cut is not None and values.size:
        values = values[: int(np.argmin(np.abs(values - cut))) + 1]
    if values.size < 2:
        raise ValueError(f"{values.size} eigenvalue(s) left to fit")
    fit = fit_powerlaw(values, thresh=thresh)
    return fit


def fit_tail(evals: np.ndarray, fit: str = "PL", pl_package: str = "ww", xmax: Any = None,
             fix_fingers: str | None = None, xmin_max: float | None = None,
             max_fingers: int | None = DEFAULT_MAX_FINGERS, finger_thresh: float = DEFAULT_FINGER_THRESH,
             thresh: float = EVALS_THRESH) -> TailFit:
    """Fit the tail of an ESD the way the reference does for the given options.

    Parameters
    ----------
    evals : array_like, shape (n,)
        Eigenvalues of one layer (any order).
    fit : {'PL', 'TPL', 'E_TPL'}
    pl_package : {'ww', 'powerlaw'}
    xmax : None, 'force' or non-zero int
    fix_fingers : None, 'xmin_peak' or 'clip_xmax'
    xmin_max, max_fingers, finger_thresh
        Parameters of the finger fixes (:mod:`htsr.spectral.fingers`).
    thresh : float
        Eigenvalues at or below it are left out of the fit.

    Returns
    -------
    TailFit

    Examples
    --------
    >>> x = (1 - np.random.default_rng(0).random(300)) ** (-1 / 1.5)
    >>> f = fit_tail(x, fit="TPL", pl_package="powerlaw")
    >>> f.Lambda > 0, f.num_fingers is None, f.status
    (True, True, 'success')
    """
    x = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    tpl = fit in ("TPL", "E_TPL")
    if fit == "E_TPL":
        fix_fingers = "xmin_peak"
    dist = TRUNCATED_POWER_LAW if tpl else POWER_LAW
    nan = float("nan")
    columns: dict[str, Any] = {}
    if tpl:
        columns["Lambda"] = nan
    if fix_fingers == "clip_xmax":
        columns.update(num_fingers=None, raw_alpha=nan)

    cut: float | None = None
    if isinstance(xmax, str):
        cut = float(x[-1]) if x.size else None
    elif isinstance(xmax, numbers.Integral) and not isinstance(xmax, bool) and xmax != 0:
        k = abs(int(xmax))
        if k > x.size / 2:
            cut = float(k)
        else:
            x = x[:-k]
    nz = x[x > thresh]
    package = pl_package == "powerlaw"

    def failed(reason: str) -> TailFit:
        return TailFit(nan, nan, nan, nan, nan, 0, "failed", reason, **columns)

    try:
        if fix_fingers == "xmin_peak":
            if not package:
                return failed("fix_fingers='xmin_peak' needs pl_package='powerlaw' (the reference's 'ww' fit fails it)")
            res = fit_package(nz, dist, xmax=cut, xmin_range=xmin_peak_window(x, xmin_max, thresh))
        elif fix_fingers == "clip_xmax":
            def one(values: np.ndarray, c: float | None) -> Any:
                return fit_package(values, POWER_LAW, xmax=c) if package else _ww_fit(values, c, thresh)

            clipped = clip_xmax(nz, one, effective_max_fingers(max_fingers, x.size), finger_thresh, xmax=cut)
            res = clipped.best
            columns.update(num_fingers=clipped.num_fingers, raw_alpha=float(clipped.raw.alpha))
        elif package:
            res = fit_package(nz, dist, xmax=cut)
        else:
            res = _ww_fit(nz, cut, thresh)
    except (ValueError, IndexError) as err:
        return failed(f"tail fit failed: {err}")

    alpha = float(res.alpha)
    if not np.isfinite(alpha):
        return failed(getattr(res, "reason", "") or "no power-law fit")
    xmin = float(res.xmin)
    sigma = float(res.sigma)
    D = float(res.D)
    if tpl:
        if fix_fingers == "clip_xmax":
            # the TPL refitted on the chosen clipped fit's own tail
            alpha, lam, _, _ = fit_candidate(res.tail, xmin, res.xmax, TRUNCATED_POWER_LAW)
        else:
            lam = float(res.Lambda)
        columns["Lambda"] = lam
    out_xmax = nan if res.xmax is None else float(res.xmax)
    return TailFit(
        alpha=alpha, xmin=xmin, xmax=out_xmax, D=D, sigma=sigma,
        num_pl_spikes=int(np.count_nonzero(x >= xmin)), status="success", **columns,
        xmins=getattr(res, "xmins", np.empty(0)), alphas=getattr(res, "alphas", np.empty(0)),
        Ds=getattr(res, "Ds", np.empty(0)),
    )
