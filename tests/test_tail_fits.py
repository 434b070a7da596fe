"""Known-answer tests for the reference's other tail fits: spectral/tpl.py, fingers.py, fitting.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

import htsr
from htsr.config import AnalysisConfig
from htsr.errors import OptionError
from htsr.spectral.fingers import clip_xmax, effective_max_fingers, xmin_peak_window
from htsr.spectral.fitting import fit_tail
from htsr.spectral.powerlaw import fit_powerlaw
from htsr.spectral.tpl import fit_package, upper_gamma

Z = np.array([1e-8, 1e-4, 0.01, 0.2, 0.5, 0.9, 0.999, 1.0, 1.3, 2.5, 7.0, 30.0, 300.0])


def test_upper_gamma_closed_forms():
    # Γ(0, z) = E1(z); Γ(−1, z) = e^−z/z − E1(z); Γ(−1/2, z) = 2 e^−z/√z − 2√π erfc(√z);
    # Γ(1/2, z) = √π erfc(√z)
    Z = globals()["Z"][globals()["Z"] <= 30]  # the closed forms of negative orders cancel beyond
    e1 = special.exp1(Z)
    cases = {
        0.0: e1,
        -1.0: np.exp(-Z) / Z - e1,
        -0.5: 2 * np.exp(-Z) / np.sqrt(Z) - 2 * np.sqrt(np.pi) * special.erfc(np.sqrt(Z)),
        0.5: np.sqrt(np.pi) * special.erfc(np.sqrt(Z)),
    }
    for s, want in cases.items():
        np.testing.assert_allclose(upper_gamma(s, Z), want, rtol=2e-13, err_msg=str(s))


def test_upper_gamma_recurrence_and_small_orders():
    # Γ(s+1, z) = s Γ(s, z) + z^s e^−z for orders near 0 and near negative integers
    z = Z[(Z >= 0.2) & (Z < 50)]  # where the identity itself is well conditioned
    for s in (-1e-9, -1e-6, -0.3, -0.999999, -1.000001, -2.7, -5.5):
        lhs = upper_gamma(s + 1, z) if s + 1 <= 0.5 else special.gammaincc(s + 1, z) * special.gamma(s + 1)
        rhs = s * upper_gamma(s, z) + z ** s * np.exp(-z)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12, err_msg=str(s))


def test_upper_gamma_matches_mpmath():
    mpmath = pytest.importorskip("mpmath")
    for s in (-1e-7, -0.02, -1.5, -3.25, -6.0):
        for z in (1e-5, 0.3, 0.99, 1.01, 4.0, 60.0):
            assert float(upper_gamma(s, z)) == pytest.approx(float(mpmath.gammainc(s, z)), rel=1e-13)


def _pareto(n, a, seed=0):
    return (1 - np.random.default_rng(seed).random(n)) ** (-1 / (a - 1))


def test_package_pl_is_the_closed_form_mle_at_its_xmin():
    x = _pareto(400, 2.5)
    fit = fit_package(x)
    tail = np.sort(x)[np.sort(x) >= fit.xmin]
    assert fit.alpha == pytest.approx(1 + tail.size / np.sum(np.log(tail / fit.xmin)), rel=1e-14)
    assert fit.sigma == pytest.approx((fit.alpha - 1) / np.sqrt(tail.size), rel=1e-14)
    assert fit.xmax is None and np.isnan(fit.Lambda) and fit.status == "success"
    assert fit.alpha == pytest.approx(2.5, abs=0.15)
    # with distinct values the search is htsr's own (same candidates, same D)
    ours = fit_powerlaw(x)
    assert fit.xmin == ours.xmin and fit.alpha == pytest.approx(ours.alpha, rel=1e-12)
    assert fit.D == pytest.approx(ours.D, rel=1e-9)


def test_package_tpl_recovers_a_truncated_power_law():
    # rejection sampling of x^-1.8 e^(-x/20) on [1, inf): propose exponential, accept (x/xmin)^-alpha
    rng = np.random.default_rng(3)
    lam, alpha = 0.05, 1.8
    out = []
    while len(out) < 1500:
        x = 1 - np.log(1 - rng.random()) / lam
        if rng.random() < x ** -alpha:
            out.append(x)
    data = np.sort(out)
    # a window holding the two smallest values: the largest of a window is never a candidate
    fit = fit_package(data, "truncated_power_law", xmin_range=(0.0, data[1]))
    assert fit.xmin == data[0] and fit.xmins.tolist() == [data[0]]
    assert fit.alpha == pytest.approx(alpha, abs=0.15)
    assert fit.Lambda == pytest.approx(lam, rel=0.35)
    assert np.isnan(fit.sigma)


def test_package_matches_powerlaw_package():
    powerlaw = pytest.importorskip("powerlaw")
    import contextlib
    import io
    import warnings

    x = np.sort(np.random.default_rng(5).standard_t(3, 60) ** 2)
    for dist, xmax in (("power_law", None), ("power_law", float(x.max())), ("truncated_power_law", None)):
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ref = powerlaw.Fit(x, xmax=xmax, verbose=False, distribution=dist, xmin_distribution=dist)
            lam = ref.truncated_power_law.Lambda if dist != "power_law" else np.nan
        ours = fit_package(x, dist, xmax=xmax)
        assert (ours.alpha, ours.xmin, ours.D) == pytest.approx((ref.alpha, ref.xmin, ref.D), rel=1e-9)
        assert ours.Lambda == pytest.approx(lam, rel=1e-9, nan_ok=True)


def test_package_without_candidates_fails():
    fit = fit_package(np.array([2.0, 2.0, 2.0]))
    assert fit.status == "failed" and np.isnan(fit.alpha)
    fit = fit_package(np.arange(1.0, 20.0), xmin_range=(100.0, 200.0))
    assert fit.status == "failed"


def test_xmin_peak_window_is_the_reference_pair():
    x = np.concatenate([np.full(50, 0.2), np.linspace(0.3, 10, 50)])
    lo, hi = xmin_peak_window(x)
    counts, edges = np.histogram(np.log10(x), bins=100)
    peak = 10 ** edges[np.argmax(counts)]
    assert peak == pytest.approx(0.2)
    assert (lo, hi) == pytest.approx((np.log10(0.95 * peak), 1.5 * peak))
    assert xmin_peak_window(x, xmin_max=3.0)[1] == 3.0
    with pytest.raises(ValueError):
        xmin_peak_window(np.zeros(5))


def test_effective_max_fingers():
    assert effective_max_fingers(None, 100) == 10
    assert effective_max_fingers(20, 100) == 10      # below half the eigenvalues: the default
    assert effective_max_fingers(60, 100) == 60
    assert effective_max_fingers(-1, 4) == 10


class _Fit:
    def __init__(self, alpha):
        self.alpha = alpha


def test_clip_xmax_stops_at_the_first_big_drop():
    x = np.arange(1.0, 41.0)
    alphas = {40: 6.0, 38: 5.5, 37: 5.2, 36: 4.5, 35: 4.4, 34: 4.4, 33: 4.3}  # size -> alpha
    seen = []

    def fit(values, cut):
        seen.append(values.size)
        return _Fit(alphas.get(values.size, 4.0))

    res = clip_xmax(x, fit, max_fingers=10, finger_thresh=1.0)
    assert res.raw.alpha == 6.0 and res.best.alpha == 4.5 and res.num_fingers == 3
    assert seen == [40, 38, 37, 36, 35, 34, 33]  # clipping starts at 2; three checks follow

    res = clip_xmax(x, lambda v, c: _Fit(6.0 if v.size == 40 else 1.9), max_fingers=10)
    assert res.num_fingers == 1  # 1.9 + 1 < 6: the first clipped fit wins
    res = clip_xmax(x, lambda v, c: _Fit(2.5 if v.size == 40 else 2.0), max_fingers=10)
    assert res.num_fingers == 0 and res.best.alpha == 2.5  # dropped to 2 without a finger: unclipped stands


def test_fit_tail_options():
    x = np.sort(np.random.default_rng(1).standard_t(3, 80) ** 2) + 0.01
    plain = fit_tail(x)
    assert plain.alpha == fit_powerlaw(x).alpha and (plain.Lambda, plain.num_fingers, plain.raw_alpha) == (None, None, None)
    clipped = fit_tail(x, xmax=-3)
    assert clipped.alpha == fit_powerlaw(x[:-3]).alpha and clipped.xmax == x[-4]
    forced = fit_tail(x, pl_package="powerlaw", xmax="force")
    assert forced.xmax == x[-1]
    assert np.isnan(fit_tail(x, pl_package="powerlaw").xmax)
    fingers = fit_tail(x, fix_fingers="clip_xmax")
    assert fingers.num_fingers is not None and fingers.raw_alpha == plain.alpha and fingers.Lambda is None
    bad = fit_tail(x, fix_fingers="xmin_peak", pl_package="ww")
    assert bad.status == "failed" and np.isnan(bad.alpha) and "powerlaw" in bad.reason
    tiny = fit_tail(np.array([1.0, 2.0, 3.0]), fix_fingers="clip_xmax")
    assert tiny.status == "failed"


def test_config_validates_fit_options():
    c = AnalysisConfig(fit="tpl")
    assert (c.fit, c.pl_package) == ("TPL", "powerlaw")
    assert AnalysisConfig(fit="E_TPL").pl_package == "powerlaw"
    assert AnalysisConfig(fix_fingers="clip_xmax").pl_package == "ww"
    assert AnalysisConfig(fix_fingers=False).fix_fingers is None
    for bad in ({"fit": "XYZ"}, {"fit": "TPL", "pl_package": "ww"}, {"xmax": "force", "pl_package": "ww"},
                {"xmax": 0}, {"xmax": True}, {"xmax": 1.5}, {"fix_fingers": "yes"},
                {"fix_fingers": "clip_xmax", "xmax": -2}, {"fit": "E_TPL", "fix_fingers": "clip_xmax"},
                {"max_fingers": 0}, {"finger_thresh": -1.0}, {"xmin_max": -2.0}, {"pl_package": "scipy"}):
        with pytest.raises(OptionError):
            AnalysisConfig(**bad)


def test_analyze_tpl_columns_on_a_dict():
    rng = np.random.default_rng(0)
    W = {"fc.weight": rng.standard_t(3, (90, 40))}
    d = htsr.analyze(W, fit="TPL").details
    assert "Lambda" in d and d["Lambda"].iloc[0] > 0 and np.isnan(d["sigma"].iloc[0])
    d = htsr.analyze(W, fix_fingers="clip_xmax").details
    assert {"num_fingers", "raw_alpha"} <= set(d.columns)


@pytest.mark.parametrize("x", [np.array([]), np.ones(30), np.array([1.0, 2.0]), np.r_[np.zeros(5), 1.0, 2.0, 3.0],
                               np.r_[np.ones(20), 1e6], np.logspace(-8, 8, 40)])
def test_fit_tail_degenerate_spectra_give_a_status_not_an_exception(x):
    for opts in ({}, {"fit": "TPL", "pl_package": "powerlaw"}, {"fit": "E_TPL", "pl_package": "powerlaw"},
                 {"xmax": "force", "pl_package": "powerlaw"}, {"xmax": -3}, {"xmax": -50}, {"fix_fingers": "clip_xmax"},
                 {"fix_fingers": "clip_xmax", "pl_package": "powerlaw", "xmax": "force"},
                 {"fix_fingers": "xmin_peak", "pl_package": "powerlaw"},
                 {"fix_fingers": "clip_xmax", "fit": "TPL", "pl_package": "powerlaw"}):
        f = fit_tail(x, **opts)
        assert f.status in ("success", "failed")
        assert (f.status == "failed") == bool(np.isnan(f.alpha))
