"""Known-answer tests for the core math: power-law fit, ESD, conv pooling, metrics."""

from __future__ import annotations

import numpy as np
import pytest

import htsr
from htsr.config import LayerType
from htsr.matrices import slices
from htsr.spectral.esd import compute_esd
from htsr.spectral.metrics import norm_metrics


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("alpha", [1.8, 2.5, 4.0])
def test_pareto_exponent_recovered_within_three_sigma(seed, alpha):
    rng = np.random.default_rng(seed)
    x = (1.0 - rng.random(4000)) ** (-1.0 / (alpha - 1.0))  # density ∝ x^-alpha on [1, ∞)
    fit = htsr.fit_powerlaw(x)
    assert fit.status == "success"
    assert abs(fit.alpha - alpha) < 3 * fit.sigma + 0.02
    assert fit.xmin >= x.min()
    assert fit.num_pl_spikes == np.count_nonzero(x >= fit.xmin)
    assert fit.sigma == pytest.approx((fit.alpha - 1) / np.sqrt(fit.num_pl_spikes))


def test_fit_matches_plain_exhaustive_loop():
    rng = np.random.default_rng(7)
    x = np.sort(np.concatenate([rng.chisquare(3, 600), (1 - rng.random(80)) ** (-1 / 1.2) * 5]))
    data = x[x > 1e-5]
    logx = np.log(data)
    n = data.size
    Ds = np.ones(n - 1)
    alphas = np.zeros(n - 1)
    for i in range(n - 1):
        ni = n - i
        a = 1 + ni / (np.sum(logx[i:]) - ni * logx[i])
        alphas[i] = a
        if a > 1:
            Ds[i] = np.max(np.abs(1 - (data[i:] / data[i]) ** (1 - a) - np.arange(ni) / ni))
    best = int(np.argmin(Ds))
    fit = htsr.fit_powerlaw(x)
    assert fit.xmin == data[best]
    assert fit.alpha == pytest.approx(alphas[best], rel=1e-12)
    assert fit.D == pytest.approx(Ds[best], rel=1e-12)
    curves = htsr.fit_powerlaw(x, curves=True)
    np.testing.assert_allclose(curves.Ds, Ds, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(curves.alphas, alphas, rtol=1e-12)


def test_fit_warning_and_failure():
    assert htsr.fit_powerlaw(np.array([1e-7, 1e-6, 1.0])).status == "failed"
    failed = htsr.fit_powerlaw(np.array([]))
    assert failed.status == "failed" and np.isnan(failed.alpha) and failed.warning == ""
    rng = np.random.default_rng(0)
    steep = (1 - rng.random(3000)) ** (-1 / 7.0)  # alpha 8
    assert htsr.fit_powerlaw(steep).warning == "under-trained"
    flat = (1 - rng.random(3000)) ** (-1 / 0.6)  # alpha 1.6
    assert htsr.fit_powerlaw(flat).warning == "over-trained"


@pytest.mark.parametrize("shape", [(1000, 250), (250, 1000), (600, 600)])
def test_gaussian_esd_edge_is_marchenko_pastur(shape):
    rng = np.random.default_rng(3)
    W = rng.standard_normal(shape)
    N, M = max(shape), min(shape)
    ev = compute_esd(W[None], N).evals
    assert ev.size == M
    # X = WᵀW with unit-variance entries: bulk on N·(1 ± sqrt(M/N))²
    edge_hi = N * (1 + np.sqrt(M / N)) ** 2
    edge_lo = N * (1 - np.sqrt(M / N)) ** 2
    assert ev.max() == pytest.approx(edge_hi, rel=0.05)
    assert ev.min() == pytest.approx(edge_lo, rel=0.1, abs=0.05 * N)
    assert ev.mean() == pytest.approx(N, rel=0.02)  # trace/M = N·var


def test_esd_equals_squared_singular_values():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((300, 120)) @ np.diag(np.linspace(0.1, 3, 120))
    esd = compute_esd(W[None], 300)
    sv = np.linalg.svd(W, compute_uv=False)
    np.testing.assert_allclose(esd.evals, np.sort(sv**2), rtol=1e-10)
    assert esd.sv_max == pytest.approx(sv.max(), rel=1e-12)
    assert esd.sv_min == pytest.approx(sv.min(), rel=1e-8)
    assert esd.rank_loss == 0


def test_rank_deficient_slice_falls_back_to_exact_rank():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((200, 5)) @ rng.standard_normal((5, 80))  # rank 5 of 80
    esd = compute_esd(W[None], 200)
    assert esd.rank_loss == 75
    m = norm_metrics(esd.evals, 2.0, 200)
    assert m.matrix_rank == 5
    assert m.weak_rank_loss == 75


def test_conv_pooled_esd_is_concatenation_of_slices():
    rng = np.random.default_rng(4)
    K = rng.standard_normal((32, 16, 3, 3))
    stack = slices(K, LayerType.CONV2D, conv2d_norm=True)
    assert stack.shape == (9, 32, 16)
    pooled = compute_esd(stack, 32).evals
    parts = [np.linalg.svd(K[:, :, i, j] * np.sqrt(0.5), compute_uv=False) ** 2 for i in range(3) for j in range(3)]
    np.testing.assert_allclose(pooled, np.sort(np.concatenate(parts)), rtol=1e-10)
    # conv2d_norm halves the eigenvalues
    raw = compute_esd(slices(K, LayerType.CONV2D, conv2d_norm=False), 32).evals
    np.testing.assert_allclose(pooled, raw / 2, rtol=1e-12)


def test_conv_layer_rows_pooled_and_per_slice():
    rng = np.random.default_rng(5)
    sd = {"conv.weight": rng.standard_normal((64, 32, 3, 3)), "c1.weight": rng.standard_normal((40, 20, 5))}
    pooled = htsr.analyze(sd).details.set_index("name")
    assert pooled.loc["conv", "rf"] == 9 and pooled.loc["conv", "num_evals"] == 32 * 9
    assert pooled.loc["conv", "layer_type"] == "conv2d"
    assert pooled.loc["c1", "rf"] == 5 and pooled.loc["c1", "layer_type"] == "conv1d"
    per_slice = htsr.analyze(sd, pool=False).details
    conv = per_slice[per_slice["name"] == "conv"]
    assert list(conv["slice_id"]) == list(range(9))
    assert (conv["num_evals"] == 32).all() and (conv["rf"] == 1).all()
    expected = compute_esd(slices(sd["conv.weight"], LayerType.CONV2D)[4:5], 64).evals
    assert conv.iloc[4]["lambda_max"] == pytest.approx(expected.max(), rel=1e-12)


def test_metrics_formulas():
    ev = np.array([0.5, 1.0, 2.0, 8.0])
    m = norm_metrics(ev, 2.5, N=10)
    assert m.norm == 11.5
    assert m.log_norm == pytest.approx(np.log10(11.5))
    assert m.spectral_norm == m.lambda_max == 8.0
    assert m.alpha_weighted == pytest.approx(2.5 * np.log10(8.0))
    assert m.log_alpha_norm == pytest.approx(np.log10(np.sum(ev**2.5)))
    assert m.stable_rank == pytest.approx(11.5 / 8)
    p = ev / ev.sum() + 1e-10
    assert m.entropy == pytest.approx(-np.sum(p * np.log(p)) / np.log(4 + 1e-10))
    nan = norm_metrics(ev, float("nan"), N=10)
    assert np.isnan(nan.alpha_weighted) and np.isnan(nan.log_alpha_norm)
