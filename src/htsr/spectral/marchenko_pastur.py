"""Marchenko–Pastur fit of an ESD's bulk, and the detX constraint.

The fit follows the reference tool's definition exactly, but fits the kernel
density once per ESD instead of once per trial σ:

1. Rescale the eigenvalues to mean 1: ``W_scale = sqrt(n / Σλ)``, ``x = W_scale² λ``.
2. Estimate the density of ``x`` (of ``√x`` when Q = 1) with a triangular
   kernel of half-width ``bw = 0.1`` on 1000 points over ``[0, max + 0.5]``;
   keep the points where the estimate exceeds 0.01.
3. Choose σ minimizing Σ (ρ_MP(x; Q, σ) − ρ̂(x))² over the kept points, with
   ``scipy.optimize.brute`` on σ = 0.05·s0 … 2·s0 in steps of 0.01·s0
   (s0 = sqrt(max x / (1 + 1/√Q)²)) and its default Nelder–Mead finish. A σ whose
   bulk edges are inconsistent with the density's mode (λ+ below the mode or past
   the last kept point, λ− above the mode) scores 1000 per point. For Q = 1 the
   quarter-circle law ``sqrt(4 − ν²)/(π σ²)`` of the singular values is fitted.
4. λ± = σ²(1 ± 1/√Q)²; spikes are the rescaled eigenvalues above
   λ+ + sqrt((1/√Q)·λ+^(2/3)·M^(−2/3)) (a Tracy–Widom margin); ``mp_softrank``
   = λ+ / max x; ``bulk_max``/``bulk_min`` are λ± in the original units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BANDWIDTH = 0.1
GRID_POINTS = 1000
DENSITY_THRESHOLD = 0.01
BAD_FIT_RESIDUAL = 1000.0


@dataclass(frozen=True)
class MPFit:
    """Result of a Marchenko–Pastur fit.

    Attributes
    ----------
    sigma_mp : float
        Fitted σ of the rescaled (mean 1) ESD.
    num_spikes : int
        Rescaled eigenvalues above ``edge`` (λ+ plus the Tracy–Widom margin).
    mp_softrank : float
        λ+ / largest rescaled eigenvalue.
    W_scale : float
        sqrt(n / Σλ).
    bulk_max, bulk_min : float
        λ+ and λ− in the original units (λ± / W_scale²).
    edge : float
        λ+ plus the Tracy–Widom margin, in the original units.
    """

    sigma_mp: float
    num_spikes: int
    mp_softrank: float
    W_scale: float
    bulk_max: float
    bulk_min: float
    edge: float


def triangular_kde(samples: np.ndarray, points: np.ndarray, bandwidth: float = BANDWIDTH) -> np.ndarray:
    """Exact triangular-kernel density estimate, O((n + p) log n).

    ρ̂(x) = 1/(n h) Σ max(0, 1 − |x − xᵢ|/h) (scikit-learn's ``kernel='linear'``),
    computed from prefix sums of the sorted samples.

    Parameters
    ----------
    samples : ndarray, shape (n,)
    points : ndarray, shape (p,)
    bandwidth : float
        Half-width h of the kernel.

    Examples
    --------
    >>> triangular_kde(np.array([0.0]), np.array([0.0, 0.05, 0.1, 0.2]), 0.1)
    array([10.,  5.,  0.,  0.])
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    p = np.asarray(points, dtype=np.float64)
    h = float(bandwidth)
    # center on the sample mean to limit cancellation in the prefix sums
    c = float(x.mean()) if x.size else 0.0
    xc = x - c
    pc = p - c
    csum = np.concatenate(([0.0], np.cumsum(xc)))
    lo = np.searchsorted(x, p - h, side="right")  # first xᵢ > x − h
    mid = np.searchsorted(x, p, side="right")  # first xᵢ > x
    hi = np.searchsorted(x, p + h, side="left")  # first xᵢ ≥ x + h
    n_left = mid - lo
    s_left = csum[mid] - csum[lo]
    n_right = hi - mid
    s_right = csum[hi] - csum[mid]
    # left: Σ (1 − (x − xᵢ)/h);  right: Σ (1 − (xᵢ − x)/h)
    total = n_left * (1.0 - pc / h) + s_left / h + n_right * (1.0 + pc / h) - s_right / h
    return np.clip(total, 0.0, None) / (x.size * h)


def mp_density(x: np.ndarray, Q: float, sigma: float | np.ndarray) -> np.ndarray:
    """Marchenko–Pastur density ``Q·sqrt((λ+ − x)(x − λ−)) / (2π σ² x)``, 0 outside the bulk.

    ``sigma`` may be an array of shape (k,): the result then has shape (k, len(x)).
    """
    sig = np.asarray(sigma, dtype=np.float64)[..., None]
    a = (sig * (1.0 - np.sqrt(1.0 / Q))) ** 2
    b = (sig * (1.0 + np.sqrt(1.0 / Q))) ** 2
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        prod = (b - x) * (x - a)
        val = np.sqrt(np.where((prod > 0) & (x > 0), prod, 0.0)) * Q / (2.0 * np.pi * sig * sig * np.where(x > 0, x, 1.0))
    out = np.where((prod > 0) & (x > 0), val, 0.0)
    return out


def quarter_circle_density(x: np.ndarray, sigma: float | np.ndarray) -> np.ndarray:
    """The reference's quarter-circle law for Q = 1: ``sqrt(4 − x²)/(π σ²)`` for |x| < 2, else 0.

    ``sigma`` may be an array of shape (k,): the result then has shape (k, len(x)).
    """
    sig = np.asarray(sigma, dtype=np.float64)[..., None]
    x = np.asarray(x, dtype=np.float64)
    root = np.sqrt(np.clip(4.0 - x * x, 0.0, None))
    out = root / (np.pi * sig * sig)
    return out


class _Residual:
    """Σ squared residual between the MP law at σ and a fixed density estimate.

    The density estimate is computed once. ``many`` scores a whole σ grid in one
    vectorized pass; it is handed to ``scipy.optimize.brute`` as its map-like
    ``workers`` so the grid costs one numpy call, and the scalar ``__call__``
    (used by the Nelder–Mead finish) goes through the same code.
    """

    def __init__(self, to_fit: np.ndarray, Q: float) -> None:
        xde = np.linspace(0.0, float(np.max(to_fit)) + 0.5, GRID_POINTS)
        yde = triangular_kde(to_fit, xde, BANDWIDTH)
        good = yde > DENSITY_THRESHOLD
        self.x = xde[good]
        self.y = yde[good]
        self.Q = Q
        self.mode_x = float(self.x[int(np.argmax(self.y))]) if self.x.size else 0.0
        self.x_last = float(self.x.max()) if self.x.size else 0.0

    def many(self, sigmas: np.ndarray) -> np.ndarray:
        sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        if self.Q == 1:
            resid = quarter_circle_density(self.x, sig) - self.y
            return np.einsum("ij,ij->i", resid, resid)
        a = (sig * (1.0 - np.sqrt(1.0 / self.Q))) ** 2
        b = (sig * (1.0 + np.sqrt(1.0 / self.Q))) ** 2
        bad = (b < self.mode_x) | (b > self.x_last) | (a > self.mode_x)
        resid = mp_density(self.x, self.Q, sig) - self.y
        return np.where(bad, BAD_FIT_RESIDUAL ** 2 * self.x.size, np.einsum("ij,ij->i", resid, resid))

    def map(self, func: object, grid: np.ndarray) -> np.ndarray:
        """Map-like for ``brute(workers=...)``: the residual at every grid σ (``func`` is this residual)."""
        return self.many(np.asarray(grid, dtype=np.float64))

    def __call__(self, p: np.ndarray) -> float:
        return float(self.many(np.asarray(p, dtype=np.float64).ravel()[:1])[0])


def fit_mp(evals: np.ndarray, Q: float, M: int) -> MPFit:
    """Fit the Marchenko–Pastur law to an ESD (the reference's ``mp_fit``).

    Parameters
    ----------
    evals : ndarray, shape (n,)
        Eigenvalues (any order), not all zero.
    Q : float
        Aspect ratio N/M (≥ 1).
    M : int
        Smaller dimension of one matrix (for the Tracy–Widom margin).

    Returns
    -------
    MPFit

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((1000, 250)) / np.sqrt(1000)
    >>> fit = fit_mp(np.linalg.svd(W, compute_uv=False) ** 2, Q=4.0, M=250)
    >>> round(fit.sigma_mp, 1), fit.num_spikes
    (1.0, 0)
    """
    from scipy import optimize

    ev = np.asarray(evals, dtype=np.float64)
    total = float(np.sum(ev))
    if ev.size == 0 or not total > 0 or not np.isfinite(total):
        raise ValueError("the Marchenko–Pastur fit needs finite eigenvalues with a positive sum")
    with np.errstate(all="ignore"):
        W_scale = float(np.sqrt(ev.size) / np.sqrt(total))
        x = (W_scale * W_scale) * ev
        lambda_max = float(np.max(x))
        inv_sq = 1.0 / np.sqrt(Q)
        s0 = float(np.sqrt(lambda_max / (1.0 + inv_sq) ** 2))
    if not (np.isfinite(W_scale) and np.isfinite(s0) and s0 > 0 and np.all(np.isfinite(x))):
        # e.g. every eigenvalue subnormal: the rescaling to mean 1 overflows
        raise ValueError("the eigenvalues cannot be rescaled to mean 1 (too small or too large)")
    to_fit = np.sqrt(x) if Q == 1 else x
    with np.errstate(all="ignore"):
        resid = _Residual(to_fit, Q)
        ranges = (slice(0.05 * s0, 2.0 * s0, 0.01 * s0),)
        sigma = float(np.asarray(optimize.brute(resid, ranges, workers=resid.map)).ravel()[0])
    bulk_max = (sigma * (1.0 + inv_sq)) ** 2
    bulk_min = (sigma * (1.0 - inv_sq)) ** 2
    edge = bulk_max + np.sqrt(inv_sq * bulk_max ** (2.0 / 3.0) * float(M) ** (-2.0 / 3.0))
    num_spikes = int(np.count_nonzero(x > edge))
    s2 = W_scale * W_scale
    return MPFit(sigma_mp=sigma, num_spikes=num_spikes, mp_softrank=bulk_max / lambda_max, W_scale=W_scale,
                 bulk_max=bulk_max / s2, bulk_min=bulk_min / s2, edge=float(edge) / s2)


@dataclass(frozen=True)
class DetX:
    """The reference's detX constraint: ``num`` top eigenvalues, ``val`` the eigenvalue where it stops.

    ``val_rescaled`` is ``val`` on the rescaled scale (× n/Σλ; the reference's ``detX_val_unrescaled``).
    """

    num: int
    val: float
    val_rescaled: float = float("nan")


def detx_result(evals: np.ndarray) -> DetX:
    """:func:`detx` with the rescaled value too (the reference's ERG columns)."""
    num, val = detx(evals)
    ev = np.asarray(evals, dtype=np.float64)
    total = float(np.sum(ev))
    scale = np.sqrt(ev.size) / np.sqrt(total) if total > 0 else 1.0
    return DetX(num, val, float(val * (scale * scale)))


def safe_fit_mp(evals: np.ndarray, Q: float, M: int) -> MPFit | None:
    """:func:`fit_mp`, or None when the spectrum cannot be fitted (all zero, overflowing, degenerate)."""
    try:
        return fit_mp(evals, Q, M)
    except (ValueError, FloatingPointError, ArithmeticError):
        return None


def detx(evals: np.ndarray) -> tuple[int, float]:
    """The reference's detX constraint, computed on the rescaled (mean 1) eigenvalues x.

    Scanning from the top, the first index ``i`` (≥ 1) where the product of
    ``x[i:]`` drops below 1 gives ``detX_num = n − i`` and ``detX_val = λ[i]``, the
    eigenvalue there in the original units (as the reference reports it). When
    the product never drops below 1 the reference returns ``n`` and ``λ[1]``;
    with fewer than two distinct eigenvalues ``0`` and ``λ[0]``. The product is
    accumulated as a sum of logarithms (no overflow).

    Returns
    -------
    (detX_num, detX_val)

    Examples
    --------
    >>> detx(np.array([0.2, 0.3, 1.0, 2.5]))
    (3, 0.3)
    >>> detx(np.array([2.0, 3.0, 10.0, 25.0]))
    (3, 3.0)
    """
    ev = np.sort(np.asarray(evals, dtype=np.float64))
    n = ev.size
    if n == 0:
        return 0, float("nan")
    total = float(ev.sum())
    x = ev * (n / total) if total > 0 else ev
    if n < 2 or not x[0] < x[-1]:
        return 0, float(ev[0])
    with np.errstate(divide="ignore"):
        logs = np.log(x[1:])[::-1]  # x[n-1], x[n-2], …, x[1]
    csum = np.cumsum(logs)
    below = np.flatnonzero(csum < 0.0)
    if below.size == 0:
        return n, float(ev[1])
    idx = n - 1 - int(below[0])
    return n - idx, float(ev[idx])
