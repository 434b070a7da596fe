"""The pieces of the reference's treatment (``htsr.compat.REFERENCE``): small-sample fit, geometry, slice scaling, top-M ESD, replicas."""

from __future__ import annotations

import math

import numpy as np
import pytest

import htsr
from htsr.compat.treatment import REFERENCE, reference_conv2d_factor, reference_geometry
from htsr.config import LayerType
from htsr.matrices import Geometry, geometry
from htsr.spectral.esd import compute_esd, top_esd
from htsr.spectral.powerlaw import fit_powerlaw, small_sample_search


def test_small_sample_fit_with_eight_points_uses_the_whole_sample_bias_corrected():
    x = np.array([1.0, 1.2, 1.5, 1.9, 2.6, 3.1, 4.8, 9.0])
    fit = fit_powerlaw(x, small_n=20)
    s = np.sum(np.log(x / x[0]))
    assert fit.alpha == pytest.approx(1 + 7 / s, rel=1e-14)  # (n − 1)/S, not n/S
    assert fit.xmin == 1.0 and fit.num_pl_spikes == 8
    F = 1 - (x / x[0]) ** (1 - fit.alpha)
    assert fit.D == pytest.approx(np.max(np.abs(np.arange(8) / 8 - F)), rel=1e-14)
    assert fit.sigma == pytest.approx((fit.alpha - 1) / math.sqrt(8), rel=1e-14)
    # htsr's own search: the plain MLE n_i/S_i at its own xmin
    own = fit_powerlaw(x)
    i = int(np.flatnonzero(x == own.xmin)[0])
    assert own.alpha == pytest.approx(1 + (8 - i) / np.sum(np.log(x[i:] / x[i])), rel=1e-14)
    assert own.alpha != pytest.approx(fit.alpha, rel=1e-3)


def test_small_sample_search_only_tails_of_eight_and_smallest_D_wins():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(8, 20))
        x = np.sort(rng.pareto(1.5, n) + 1.0)
        i, alphas, Ds = small_sample_search(np.log(x))
        assert n - i >= 8
        assert np.isnan(alphas[n - 7:]).all() and (Ds[n - 7:] == 1).all()
        assert Ds[i] == Ds.min() and np.argmin(Ds) == i
        fit = fit_powerlaw(x, small_n=20)
        assert fit.xmin == x[i] and fit.alpha == alphas[i]


def test_small_sample_only_below_the_threshold():
    x = np.sort(np.random.default_rng(3).pareto(2.0, 20) + 1.0)
    assert fit_powerlaw(x, small_n=20).alpha == fit_powerlaw(x).alpha  # n = 20: the exhaustive search
    assert fit_powerlaw(x[1:], small_n=20).alpha != fit_powerlaw(x[1:]).alpha


def test_small_sample_fewer_than_eight_points_fits_all_of_them():
    x = np.array([0.5, 0.9, 1.4, 2.2, 5.0])
    fit = fit_powerlaw(x, small_n=20)
    assert fit.xmin == 0.5 and fit.alpha == pytest.approx(1 + 4 / np.sum(np.log(x / 0.5)), rel=1e-14)
    assert fit.sigma > 0  # the reference leaves a stale −1/√n here (docs/compat.md)


def test_degenerate_small_sample_fails_cleanly():
    fit = fit_powerlaw(np.full(12, 3.0), small_n=20)
    assert fit.status == "failed" and np.isnan(fit.alpha)


@pytest.mark.parametrize("shape,kind,expected", [
    ((32, 16, 3), LayerType.CONV1D, Geometry(N=32, M=3, rf=1, evals=3)),
    ((24, 40, 12), LayerType.CONV1D, Geometry(N=40, M=12, rf=1, evals=12)),
    ((32, 64, 2, 2), LayerType.CONV2D, Geometry(N=32, M=64, rf=4, evals=128)),   # even rf, out < in: swapped
    ((32, 64, 3, 3), LayerType.CONV2D, Geometry(N=64, M=32, rf=9)),              # odd rf: as htsr
    ((64, 32, 2, 2), LayerType.CONV2D, Geometry(N=64, M=32, rf=4)),              # out ≥ in: as htsr
    ((30, 40), LayerType.DENSE, Geometry(N=40, M=30, rf=1)),
])
def test_reference_geometry(shape, kind, expected):
    g = reference_geometry(shape, kind)
    assert g == expected
    if g.evals == 0:
        assert g == geometry(shape)
    assert g.num_evals == (g.evals or g.M * g.rf)


def test_reference_conv2d_factor():
    assert reference_conv2d_factor(9, pooled=True) == math.sqrt(0.5)
    assert reference_conv2d_factor(9, pooled=False) == pytest.approx(math.sqrt(4.5))
    assert reference_conv2d_factor(1, pooled=False) == math.sqrt(0.5)


def test_conv1d_top_m_singular_values():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((32, 16, 9))
    esd = top_esd(compute_esd(W, 32).evals, 9, 32)
    sv = np.sort(np.linalg.svd(W, compute_uv=False).ravel())[-9:]  # per output: the (16, 9) matrix
    np.testing.assert_allclose(esd.evals, sv ** 2, rtol=1e-12)
    assert esd.sv_min == pytest.approx(sv[0], rel=1e-12) and esd.rank_loss == 0


def test_reference_flag_changes_only_the_documented_cases():
    rng = np.random.default_rng(1)
    model = {"dense.weight": rng.standard_normal((200, 60)), "conv.weight": rng.standard_normal((16, 12, 3, 3)),
             "head.weight": rng.standard_normal((12, 60))}
    own = htsr.analyze(model).details.set_index("name")
    ref = htsr.analyze(model, treatment=REFERENCE).details.set_index("name")
    cols = ["alpha", "xmin", "D", "norm", "sv_max", "num_evals", "rf"]
    assert own.loc[["dense", "conv"], cols].equals(ref.loc[["dense", "conv"], cols])  # ≥ 20 eigenvalues pooled
    assert own.loc["head", "alpha"] != ref.loc["head", "alpha"]  # 12 eigenvalues: small-sample estimator
    own_s = htsr.analyze(model, pool=False).details
    ref_s = htsr.analyze(model, pool=False, treatment=REFERENCE).details
    conv_own, conv_ref = own_s[own_s["name"] == "conv"], ref_s[ref_s["name"] == "conv"]
    assert list(conv_own["rf"]) == [1] * 9 and list(conv_ref["rf"]) == [9] * 9
    np.testing.assert_allclose(conv_ref["norm"].to_numpy(), 9 * conv_own["norm"].to_numpy(), rtol=1e-12)  # √(rf/2) vs √½
    assert ref_s.loc[ref_s["name"] == "dense", "slice_id"].tolist() == [0]
    assert own_s.loc[own_s["name"] == "dense", "slice_id"].isna().all()


def test_randomize_replicas_follow_the_rows_eigenvalue_count():
    # a conv layer with M = 16 per slice but M·rf = 144 eigenvalues: one shuffle, as the reference
    W = np.random.default_rng(2).standard_normal((16, 32, 3, 3))
    (layer,) = htsr.analyze({"conv.weight": W}, randomize=True).layers
    assert layer.randomized.replicas == 1 and layer.randomized.evals.size == 144
    # per slice (pool=False): 16 eigenvalues < 100: five shuffles; the reference counts the layer's 144
    own = htsr.analyze({"conv.weight": W}, randomize=True, pool=False).layers
    ref = htsr.analyze({"conv.weight": W}, randomize=True, pool=False, treatment=REFERENCE, min_evals=8).layers
    assert len(own) == len(ref) == 9
    assert {r.randomized.replicas for r in own} == {5} and {r.randomized.evals.size for r in own} == {80}
    assert {r.randomized.replicas for r in ref} == {1} and {r.randomized.evals.size for r in ref} == {16}


def test_failed_fit_value_is_a_treatment_member():
    """The reference writes −1 for a failed fit; htsr (both treatments) keeps NaN, and a treatment may choose −1."""
    from htsr.compat import ReferenceTreatment

    class MinusOne(ReferenceTreatment):
        failed_fit_value = -1.0

    model = {"flat.weight": np.ones((30, 12)), "fc.weight": np.random.default_rng(4).standard_normal((60, 30))}
    for treatment in (None, REFERENCE):
        d = htsr.analyze(model, **({} if treatment is None else {"treatment": treatment})).details.set_index("name")
        assert d.loc["flat", "status"] == "failed" and np.isnan(d.loc["flat", "alpha"])
    d = htsr.analyze(model, treatment=MinusOne()).details.set_index("name")
    assert d.loc["flat", ["alpha", "D", "xmin"]].tolist() == [-1.0, -1.0, -1.0]
    assert d.loc["flat", "status"] == "failed" and d.loc["flat", "warning"] == "over-trained"  # as the reference labels it
    assert d.loc["fc", "alpha"] == htsr.analyze(model, treatment=REFERENCE).details.set_index("name").loc["fc", "alpha"]
