"""Marchenko–Pastur fit and detX: known densities, known answers, and the reference's MiniLM table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DATA

from htsr.spectral.marchenko_pastur import detx, fit_mp, mp_density, quarter_circle_density, triangular_kde


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """These are many small eigenproblems: one BLAS thread each is fastest and immune to a busy machine."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


def _esd(W: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.svd(W, compute_uv=False) ** 2)


def test_triangular_kde_matches_the_direct_sum():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.gamma(2.0, 0.5, 700), [0.0, 0.05, 3.0, 3.0]])
    grid = np.linspace(-0.2, x.max() + 0.5, 777)
    h = 0.1
    direct = np.clip(1.0 - np.abs(grid[:, None] - x[None, :]) / h, 0.0, None).sum(axis=1) / (x.size * h)
    np.testing.assert_allclose(triangular_kde(x, grid, h), direct, rtol=0, atol=1e-12)


def test_triangular_kde_integrates_to_one():
    x = np.random.default_rng(1).standard_normal(500) + 10.0
    grid = np.linspace(x.min() - 1, x.max() + 1, 20001)
    assert np.trapezoid(triangular_kde(x, grid, 0.1), grid) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("Q", [1.5, 4.0, 10.0])
def test_mp_density_is_a_density_with_the_known_mean(Q):
    sigma = 0.8
    lo, hi = (sigma * (1 - Q ** -0.5)) ** 2, (sigma * (1 + Q ** -0.5)) ** 2
    x = np.linspace(lo, hi, 400001)
    rho = mp_density(x, Q, sigma)
    assert np.trapezoid(rho, x) == pytest.approx(1.0, abs=2e-3)
    assert np.trapezoid(x * rho, x) == pytest.approx(sigma ** 2, rel=2e-3)  # mean eigenvalue σ²
    assert mp_density(np.array([lo / 2, hi * 1.01, 0.0]), Q, sigma).tolist() == [0.0, 0.0, 0.0]
    # vectorized over σ: one row per σ, equal to the scalar call
    both = mp_density(x[::1000], Q, np.array([sigma, 1.0]))
    np.testing.assert_array_equal(both[0], mp_density(x[::1000], Q, sigma))


def test_quarter_circle_density_integrates_to_one_at_sigma_one():
    x = np.linspace(0, 2, 200001)
    assert np.trapezoid(quarter_circle_density(x, 1.0), x) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("shape", [(2000, 500), (1200, 400), (600, 600)])
def test_fit_recovers_a_random_bulk(shape):
    N, M = shape
    W = np.random.default_rng(7).standard_normal(shape) * 0.3
    ev = _esd(W)
    fit = fit_mp(ev, N / M, M)
    assert fit.sigma_mp == pytest.approx(1.0, abs=0.03)
    assert fit.num_spikes == 0
    assert fit.W_scale == pytest.approx(np.sqrt(ev.size / ev.sum()), rel=1e-12)
    lam_plus = (fit.sigma_mp * (1 + (N / M) ** -0.5)) ** 2
    lam_minus = (fit.sigma_mp * (1 - (N / M) ** -0.5)) ** 2
    assert fit.bulk_max == pytest.approx(lam_plus / fit.W_scale ** 2, rel=1e-12)
    assert fit.bulk_min == pytest.approx(lam_minus / fit.W_scale ** 2, rel=1e-12)
    assert fit.mp_softrank == pytest.approx(fit.bulk_max / ev.max(), rel=1e-12)


def test_fit_counts_planted_spikes():
    N, M = 2000, 500
    rng = np.random.default_rng(3)
    W = rng.standard_normal((N, M)) / np.sqrt(N)
    for k, strength in enumerate([4.0, 6.0, 8.0]):  # well above the BBP threshold (Q^(-1/4) ≈ 0.7)
        u = rng.standard_normal(N)
        v = rng.standard_normal(M)
        W += strength * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    fit = fit_mp(_esd(W), N / M, M)
    assert fit.num_spikes == 3


def test_fit_rejects_an_all_zero_spectrum():
    with pytest.raises(ValueError):
        fit_mp(np.zeros(10), 2.0, 10)


def test_detx_known_answers():
    # rescaled to mean 1 first: [0.2, 0.3, 1.0, 2.5] has mean 1; from the top 2.5, 2.5·1.0, 2.5·1.0·0.3 < 1
    assert detx(np.array([0.3, 0.2, 2.5, 1.0])) == (3, pytest.approx(0.3))
    # the scale does not change the count; the value is reported in the original units
    assert detx(10.0 * np.array([0.2, 0.3, 1.0, 2.5])) == (3, pytest.approx(3.0))
    # product never drops below 1 → the reference's (n, λ[1])
    assert detx(np.array([0.5, 1.0, 1.5])) == (3, pytest.approx(1.0))
    # constant spectrum: the reference's (0, λ[0])
    assert detx(np.full(5, 2.0)) == (0, pytest.approx(2.0))
    # exact zeros end the product at once below the top
    assert detx(np.array([0.0, 0.0, 4.0]))[0] == 2


def test_detx_matches_the_plain_product():
    ev = np.sort(np.random.default_rng(4).gamma(1.5, 7.0, 300))
    x = ev * (ev.size / ev.sum())
    idx = next(i for i in range(x.size - 1, 0, -1) if np.prod(x[i:]) < 1.0)
    assert detx(ev) == (x.size - idx, pytest.approx(ev[idx]))


@pytest.fixture(scope="module")
def minilm_report(minilm_path):
    """MiniLM read from its safetensors file (no torch needed), rows in the golden table's order."""
    import htsr

    ref = pd.read_csv(DATA / "minilm_ww077_randomize_mpfit.csv")
    report = htsr.analyze(str(minilm_path / "model.safetensors"), randomize=True, mp_fit=True)
    return report, report.details.set_index("longname").loc[ref["longname"]].reset_index()


def test_minilm_mp_fit_matches_the_reference(minilm_report):
    """The MP fit is deterministic: sigma_mp and every column derived from it equal the reference's on every layer."""
    ref = pd.read_csv(DATA / "minilm_ww077_randomize_mpfit.csv")
    _, d = minilm_report
    assert len(d) == len(ref) == 39
    for col in ("sigma_mp", "W_scale", "bulk_max", "bulk_min", "mp_softrank"):
        np.testing.assert_allclose(d[col], ref[col], rtol=1e-12, err_msg=col)
    assert d["num_spikes"].tolist() == ref["num_spikes"].tolist()


def test_minilm_randomized_columns_agree_statistically(minilm_report):
    ref = pd.read_csv(DATA / "minilm_ww077_randomize_mpfit.csv")
    report, d = minilm_report
    assert (np.abs(d["max_rand_eval"] / ref["max_rand_eval"] - 1) <= 0.10).mean() >= 0.9
    assert (np.abs(d["rand_sigma_mp"] / ref["rand_sigma_mp"] - 1) <= 0.01).mean() >= 0.9
    assert (np.abs(d["rand_distance"] / ref["rand_distance"] - 1) <= 0.05).mean() >= 0.9
    assert (d["rand_num_spikes"] == ref["rand_num_spikes"]).mean() >= 0.9
    np.testing.assert_allclose(d["ww_softrank"], d["max_rand_eval"] / d["lambda_max"], rtol=1e-12)
    np.testing.assert_allclose(d["ww_maxdist"], d["lambda_max"] - d["max_rand_eval"], rtol=1e-12)
    # htsr's trap count never exceeds the reference's spike count
    assert (d["num_traps"] <= d["rand_num_spikes"]).all()
    assert report.summary["num_traps"] == int(d["num_traps"].sum())
