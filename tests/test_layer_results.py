"""The typed per-layer results and the one randomization path every consumer shares."""

from __future__ import annotations

import numpy as np
import pytest

import htsr
from htsr.errors import HtsrError, OptionError, UnknownOptionError
from htsr.spectral.randomize import layer_rng, permutations

SEED = 7


def _trapped(seed: int = 0) -> np.ndarray:
    W = np.random.default_rng(seed).standard_normal((400, 300)) / 20
    W[3, 5] = 3.0
    W[100, 200] = -2.5
    return W


def test_analyze_remove_traps_svdsharpness_and_get_esd_see_the_same_spikes():
    W = _trapped()
    model = {"fc.weight": W}
    (layer,) = htsr.analyze(model, randomize=True, seed=SEED).layers
    spikes = layer.traps.spikes_per_slice
    assert layer.traps.num_traps == 2 and spikes == (2,)

    # get_ESD(random=True): the very eigenvalues analyze's first shuffle gave
    first = htsr.WeightWatcher(model=model).get_ESD(layer=1, random=True, seed=SEED)
    np.testing.assert_array_equal(first, layer.randomized.first)
    assert int(np.count_nonzero(first > layer.randomized.fit.edge)) == spikes[0]

    # remove_traps: exactly the located entries change, by the traps' components
    cleaned = htsr.remove_traps(model, seed=SEED)["fc.weight"]
    delta = W - cleaned
    expected = np.zeros_like(W)
    for trap in layer.traps.traps:
        for (r, c, value), comp in zip(trap.entries, trap.components):
            assert W[r, c] == value
            expected[r, c] += comp
    np.testing.assert_allclose(delta, expected, rtol=1e-12, atol=1e-15)

    # SVDSharpness: the change, seen through the same shuffle, is the top-2 components of the shuffled matrix
    sharp = htsr.SVDSharpness(model, seed=SEED)["fc.weight"]
    perm = permutations((1,) + W.shape, layer_rng(SEED, 1, 0))[0]
    removed = (W - sharp).reshape(-1)[perm].reshape(W.shape)
    shuffled = W.reshape(-1)[perm].reshape(W.shape)
    u, s, vt = np.linalg.svd(shuffled, full_matrices=False)
    np.testing.assert_allclose(removed, (u[:, :2] * s[:2]) @ vt[:2], atol=1e-10)


def test_report_tables_are_derived_from_the_layer_results():
    rng = np.random.default_rng(1)
    model = {"a.weight": _trapped(1), "b.weight": rng.standard_normal((200, 50)), "bad.weight": np.full((40, 20), np.nan)}
    report = htsr.analyze(model, randomize=True, mp_fit=True, detX=True, seed=SEED)
    assert [r.longname for r in report.layers] == report.details["longname"].tolist()
    bad = report.layer(3)
    assert bad.status == "invalid" and bad.esd is None and bad.fit is None and "NaN" in bad.reason
    row = report.details.set_index("longname")
    for r in report.layers[:2]:
        assert row.loc[r.longname, "alpha"] == r.fit.alpha
        assert row.loc[r.longname, "rand_sigma_mp"] == r.randomized.fit.sigma_mp
        assert row.loc[r.longname, "detX_num"] == r.detx.num
        assert row.loc[r.longname, "num_traps"] == r.traps.num_traps
        assert row.loc[r.longname, "lambda_max"] == r.evals[-1] == r.metrics.lambda_max
    assert len(report.traps) == report.layer(1).traps.num_traps == 2
    assert report.traps["trap_eval"].tolist() == [t.eval for t in report.layer(1).traps.traps]
    with pytest.raises(KeyError):
        report.layer(9)


def test_get_esd_and_get_weights_take_analyze_gates_and_refuse_what_they_cannot_honour():
    rng = np.random.default_rng(2)
    conv = rng.standard_normal((64, 32, 3, 3))
    small = rng.standard_normal((20, 5))
    model = {"a_conv.weight": conv, "b_fc.weight": rng.standard_normal((300, 100)), "c_small.weight": small}
    watcher = htsr.WeightWatcher(model=model)
    raw = watcher.get_ESD(layer=1)  # the reference's get_ESD: unscaled conv2d slices
    scaled = watcher.get_ESD(layer=1, conv2d_norm=True)  # what analyze() fits (sqrt(1/2) per slice)
    assert scaled.size == 32 * 9
    np.testing.assert_allclose(raw, 2 * scaled, rtol=1e-12)
    np.testing.assert_allclose(scaled, htsr.analyze(model, keep_esd=True).layer(1).evals, rtol=1e-12)
    with pytest.raises(HtsrError, match="no analyzable layer 3"):
        watcher.get_ESD(layer=3)  # 5 eigenvalues: below min_evals, as analyze() skips it
    assert watcher.get_ESD(layer=3, min_evals=2).size == 5
    np.testing.assert_array_equal(watcher.get_Weights(layer=3, min_evals=2)[0], small)
    with pytest.raises(HtsrError):
        watcher.get_Weights(layer=3)
    assert len(watcher.get_Weights(layer="a_conv")) == 9
    for bad in ({"randomize": True}, {"mp_fit": True}, {"plot": True}, {"pool": False}):
        with pytest.raises(OptionError):
            watcher.get_ESD(layer=2, **bad)
    with pytest.raises(UnknownOptionError):
        watcher.get_ESD(layer=2, colour="red")
