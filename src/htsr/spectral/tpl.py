"""Power-law and truncated power-law fits with an xmin search, as the ``powerlaw`` package (< 2) does them.

The reference tool fits with the ``powerlaw`` package (Alstott et al.) when
asked for ``pl_package='powerlaw'``, ``fit='TPL'`` / ``'E_TPL'``, an ``xmax``
or ``fix_fingers``. That package's method differs from htsr's default fit
(:mod:`htsr.spectral.powerlaw`) in ways that change the numbers; this module
implements it from the mathematics so that the reference's columns come out
the same, without the package at run time.

Model and estimation, for sorted positive data x (values above ``xmax``
dropped when it is given):

* Candidates for xmin: the distinct values of x (those inside ``xmin_range``
  when one is given), the largest left out.
* At each candidate the model is fitted by maximum likelihood on the tail
  T = {x : xmin ≤ x ≤ xmax}:

  - power law, density p(x) = (α−1) xmin^(α−1) x^(−α): closed form
    α = 1 + n / Σ ln(x/xmin) without ``xmax``; with ``xmax`` the same
    density (not renormalized to [xmin, xmax]) is maximized numerically;
  - truncated power law, p(x) = Λ^(1−α) / Γ(1−α, Λ·xmin) · x^(−α) e^(−Λx)
    (α > 1, Λ > 0; Γ(s, z) the upper incomplete gamma function), maximized
    numerically from α₀ = 1 + n / Σ ln(x/xmin), Λ₀ = 1 / mean(T).

  The numerical maximization is the Nelder–Mead simplex of
  :func:`scipy.optimize.fmin` with its default tolerances, on the negative
  log-likelihood summed left to right; outside the parameter range every
  point's likelihood is the floor 1e-307 (as are likelihoods that underflow
  to zero). The optimizer stops at its tolerance (1e-4), so the reference's
  numbers are those of this exact procedure, not the exact optimum.
* D is the Kolmogorov–Smirnov distance between the model CDF (renormalized
  to [xmin, xmax] when ``xmax`` is given) and the empirical CDF of the whole
  data set restricted to the tail and renormalized, both at the distinct data
  values ≥ xmin.
* The candidate with the smallest D wins, among those whose parameters are
  in range when some but not all are; σ = (α−1)/√n for the power law (NaN
  for the truncated power law).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

POWER_LAW = "power_law"
TRUNCATED_POWER_LAW = "truncated_power_law"
_FLOOR = 1e-307  # the smallest likelihood the package keeps (10**-307)


@dataclass(frozen=True)
class PackageFit:
    """Result of :func:`fit_package`.

    ``xmax`` is the given upper cut-off (``None`` when none was given, as the
    reference reports it). ``Lambda`` is NaN for a power law. ``status`` is
    ``'success'`` or ``'failed'`` (no candidate xmin). ``xmins``, ``alphas``,
    ``Ds`` hold the whole search (for plots).
    """

    alpha: float
    Lambda: float
    xmin: float
    xmax: float | None
    D: float
    sigma: float
    n_tail: int
    status: str
    distribution: str = POWER_LAW
    reason: str = ""
    tail: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    xmins: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    alphas: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    Ds: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)


# ---------------------------------------------------------------------------
# the upper incomplete gamma function for negative order
# ---------------------------------------------------------------------------

def upper_gamma(s: float, z: np.ndarray | float) -> np.ndarray | np.float64:
    """Γ(s, z) = ∫_z^∞ t^(s−1) e^(−t) dt for real s ≤ 1/2 and z > 0 (elementwise over z).

    For z ≥ 1 a continued fraction (modified Lentz). For z < 1 the order is
    first brought into a = s + k ∈ (−1/2, 1/2] and Γ(a, z) summed as

        Γ(a, z) = [(Γ(1+a) − 1) − (z^a − 1)] / a − Σ_{k≥1} (−1)^k z^(a+k) / (k! (a+k)),

    with ln Γ(1+a) from its Taylor series in ζ(k) and both brackets through
    ``expm1``, so nothing cancels as a → 0 (Γ(0, z) = E1(z)); then
    Γ(s, z) = (z^s e^(−z) − Γ(s+1, z)) / (−s) steps down to s, every step
    adding terms of one sign. Relative accuracy ~1e-14 (tested against mpmath).

    Examples
    --------
    >>> round(float(upper_gamma(0.0, 1.0)), 12)   # E1(1)
    0.219383934396
    >>> round(float(upper_gamma(-1.0, 2.0)), 12)  # e^-2/2 - E1(2)
    0.018132288461
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 0:
        return np.float64(_upper_gamma_scalar(float(s), float(z)))
    return np.array([_upper_gamma_scalar(float(s), float(v)) for v in z.ravel()]).reshape(z.shape)


_ZETA: list[float] = []
_EULER = 0.57721566490153286061
_FACT = [float(math.factorial(k)) for k in range(40)]


def _lgamma1p_over_a(a: float) -> float:
    """ln Γ(1+a) / a for |a| ≤ 1/2, from −γ + Σ_{k≥2} (−a)^(k−1) ζ(k) / k · (−1)^(k−1)... summed to convergence."""
    if not _ZETA:
        from scipy.special import zeta

        _ZETA.extend(float(zeta(k)) for k in range(2, 80))
    total = -_EULER
    power = 1.0
    for k in range(2, 80):
        power *= -a  # (−a)^(k−1)
        term = -_ZETA[k - 2] * power / k  # (−1)^k ζ(k) a^(k−1) / k
        total += term
        if abs(term) < 1e-18 * max(1.0, abs(total)):
            break
    return total


def _upper_gamma_scalar(s: float, z: float) -> float:
    if not z > 0 or math.isinf(z):
        return float("nan") if not z >= 0 else (0.0 if math.isinf(z) else float("inf"))
    if z >= 1.0:
        return _gamma_cf(s, z)
    k = max(0, math.ceil(-s - 0.5))
    a = s + k
    g = _gamma_series(a, z)
    for j in range(k):
        order = a - 1 - j
        g = (math.pow(z, order) * math.exp(-z) - g) / (-order)
    return g


def _gamma_series(a: float, z: float) -> float:
    """Γ(a, z) for |a| ≤ 1/2 and 0 < z < 1 (see :func:`upper_gamma`)."""
    la = _lgamma1p_over_a(a)
    lg = a * la
    first = la * (math.expm1(lg) / lg if lg != 0 else 1.0)  # (Γ(1+a) − 1) / a
    logz = math.log(z)
    y = a * logz
    second = logz * (math.expm1(y) / y if y != 0 else 1.0)  # (z^a − 1) / a
    series = 0.0
    power = 1.0
    for k in range(1, 40):
        power *= -z
        term = power / (_FACT[k] * (a + k))
        series += term
        if abs(term) < 1e-17 * abs(series):
            break
    return first - second - math.exp(y) * series


def _gamma_cf(s: float, z: float) -> float:
    """Γ(s, z) by the continued fraction e^(−z) z^s / (z + 1 − s − 1(1−s)/(z + 3 − s − …)), z ≥ 1."""
    tiny = 1e-300
    b = z + 1.0 - s
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - s)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(-z + s * math.log(z)) * h


# ---------------------------------------------------------------------------
# one candidate xmin
# ---------------------------------------------------------------------------

def _neg_loglik(loglik: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], float]:
    def f(params: np.ndarray) -> float:
        ll = loglik(params)
        return -float(np.cumsum(ll)[-1])  # left-to-right summation
    return f


def _pl_pdf(tail: np.ndarray, xmin: float, alpha: float) -> np.ndarray:
    if not alpha > 1:
        return np.full(tail.size, _FLOOR)
    with np.errstate(over="ignore", under="ignore"):
        like = tail ** -alpha * ((alpha - 1) * xmin ** (alpha - 1))
    like[like == 0] = _FLOOR
    return like


def _tpl_pdf(tail: np.ndarray, xmin: float, alpha: float, lam: float) -> np.ndarray:
    if not (lam > 0 and alpha > 1):
        return np.full(tail.size, _FLOOR)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        norm = lam ** (1 - alpha) / float(upper_gamma(1 - alpha, lam * xmin))
        like = tail ** (-alpha) * np.exp(-lam * tail) * norm
    like[like == 0] = _FLOOR
    return like


def _tpl_base(x: np.ndarray, alpha: float, lam: float) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        return 1 - upper_gamma(1 - alpha, lam * x) / lam ** (1 - alpha)


def _fmin(func: Callable[[np.ndarray], float], x0: float | tuple[float, float]) -> np.ndarray:
    import warnings

    from scipy.optimize import fmin

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.atleast_1d(fmin(func, x0, full_output=True, disp=False)[0])


def fit_candidate(tail: np.ndarray, xmin: float, xmax: float | None, distribution: str) -> tuple[float, float, float, bool]:
    """α, Λ, σ and whether the parameters are in range, for one xmin (``tail`` = data in [xmin, xmax])."""
    n = tail.size
    alpha0 = 1 + n / np.sum(np.log(tail / xmin))
    if distribution == POWER_LAW:
        alpha = alpha0
        if xmax is not None or not alpha > 1:
            with np.errstate(all="ignore"):
                alpha = float(_fmin(_neg_loglik(lambda p: np.log(_pl_pdf(tail, xmin, p[0]))), alpha0)[0])
        return float(alpha), float("nan"), float((alpha - 1) / np.sqrt(n)), bool(alpha > 1)
    lam0 = 1 / np.mean(tail)
    with np.errstate(all="ignore"):
        p = _fmin(_neg_loglik(lambda p: np.log(_tpl_pdf(tail, xmin, p[0], p[1]))), (alpha0, lam0))
    alpha, lam = float(p[0]), float(p[1])
    return alpha, lam, float("nan"), bool(lam > 0 and alpha > 1)


def _model_cdf(bins: np.ndarray, xmin: float, xmax: float | None, distribution: str,
               alpha: float, lam: float, ok: bool) -> np.ndarray:
    if not ok:
        return np.full(bins.size, _FLOOR)
    with np.errstate(all="ignore"):
        if distribution == POWER_LAW:
            def base(v: np.ndarray) -> np.ndarray:
                return 1 - (np.asarray(v, dtype=np.float64) / xmin) ** (-alpha + 1)
        else:
            def base(v: np.ndarray) -> np.ndarray:
                return _tpl_base(np.asarray(v, dtype=np.float64), alpha, lam)
        at_xmin = float(base(np.array([xmin]))[0])
        if at_xmin == 1:
            return np.ones(bins.size)
        cdf = base(bins) - at_xmin
        norm = 1 - at_xmin
        if xmax is not None:
            norm = norm - (1 - float(base(np.array([xmax]))[0]))
        return cdf / norm


def _ks(bins: np.ndarray, ecdf: np.ndarray, xmin: float, xmax: float | None, distribution: str,
        alpha: float, lam: float, ok: bool) -> float:
    keep = bins >= xmin
    b = bins[keep]
    if b.size < 2:
        return float("nan")
    e = ecdf[keep]
    dropped = e[0]
    e = (e - dropped) / (1 - dropped)
    diff = _model_cdf(b, xmin, xmax, distribution, alpha, lam, ok) - e
    return float(max(diff.max(), -diff.min()))


def _empirical_cdf(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and the fraction of the data strictly below each (data sorted)."""
    n = float(data.size)
    if data.size > 1 and np.any(data[:-1] == data[1:]):
        below = np.searchsorted(data, data, side="left") / n
        values, first = np.unique(data, return_index=True)
        return values, below[first]
    return data, np.arange(data.size) / n


# ---------------------------------------------------------------------------
# the search
# ---------------------------------------------------------------------------

def fit_package(evals: np.ndarray, distribution: str = POWER_LAW, xmax: float | None = None,
                xmin_range: tuple[float, float] | None = None) -> PackageFit:
    """Fit a power law or truncated power law with the ``powerlaw`` package's xmin search.

    Parameters
    ----------
    evals : array_like, shape (n,)
        Positive values (the caller drops eigenvalues at or below its threshold).
    distribution : {'power_law', 'truncated_power_law'}
        The model fitted at each candidate xmin (and the one whose D picks xmin).
    xmax : float, optional
        Drop values above it and renormalize the model CDF to [xmin, xmax].
    xmin_range : (float, float), optional
        Only values v with min(range) ≤ v ≤ max(range) are xmin candidates.

    Returns
    -------
    PackageFit

    Examples
    --------
    >>> import numpy as np
    >>> x = (1 - np.random.default_rng(0).random(400)) ** (-1 / 1.5)   # Pareto, density exponent 2.5
    >>> fit = fit_package(x)
    >>> round(fit.alpha, 1), fit.xmax is None
    (2.5, True)
    """
    if distribution not in (POWER_LAW, TRUNCATED_POWER_LAW):
        raise ValueError(f"distribution must be {POWER_LAW!r} or {TRUNCATED_POWER_LAW!r}; got {distribution!r}")
    data = np.asarray(evals, dtype=np.float64).ravel()
    data = data[np.isfinite(data) & (data > 0)]
    if xmax is not None:
        xmax = float(xmax)
        data = data[data <= xmax]
    data = np.sort(data)
    nan = float("nan")
    bins, ecdf = _empirical_cdf(data)
    if xmin_range is not None:
        lo, hi = min(xmin_range), max(xmin_range)
        pool = data[(data >= lo) & (data <= hi)]
    else:
        pool = data
    xmins = np.unique(pool)[:-1]
    if xmins.size == 0:
        return PackageFit(nan, nan, nan, xmax, nan, nan, 0, "failed", distribution,
                          "fewer than 2 distinct values to fit")
    alphas = np.empty(xmins.size)
    lams = np.empty(xmins.size)
    sigmas = np.empty(xmins.size)
    Ds = np.empty(xmins.size)
    ok = np.empty(xmins.size, dtype=bool)
    for k, xmin in enumerate(xmins):
        tail = data[data >= xmin]
        a, lam, sig, good = fit_candidate(tail, float(xmin), xmax, distribution)
        alphas[k], lams[k], sigmas[k], ok[k] = a, lam, sig, good
        Ds[k] = _ks(bins, ecdf, float(xmin), xmax, distribution, a, lam, good)
    best = int(np.argmin(Ds)) if ok.all() or not ok.any() else int(np.ma.masked_array(Ds, mask=~ok).argmin())
    xmin = float(xmins[best])
    tail = data[data >= xmin]
    status = "success" if np.isfinite(alphas[best]) else "failed"
    return PackageFit(
        alpha=float(alphas[best]), Lambda=float(lams[best]), xmin=xmin, xmax=xmax, D=float(Ds[best]),
        sigma=float(sigmas[best]), n_tail=int(tail.size), status=status, distribution=distribution,
        tail=tail, xmins=xmins, alphas=alphas, Ds=Ds,
    )
