"""remove_traps, SVDSmoothing, SVDSharpness: what changes, what stays bit-identical, copies."""

from __future__ import annotations

import numpy as np
import pytest

import htsr
from htsr.errors import HtsrError, OptionError


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """These are many small eigenproblems: one BLAS thread each is fastest and immune to a busy machine."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


def trapped(seed: int, n: int = 384, value: float = 8.0, where=(11, 222)) -> np.ndarray:
    W = np.random.default_rng(seed).standard_normal((n, n)) / np.sqrt(n)
    W[where] = value
    return W


def clean_layer(seed: int) -> np.ndarray:
    return np.random.default_rng(10_000 + seed).standard_normal((300, 200)) / np.sqrt(300)


@pytest.mark.parametrize("seed", range(5))
def test_remove_traps_removes_the_trap_component_and_nothing_else(seed):
    model = {"a.weight": trapped(seed), "b.weight": clean_layer(seed)}
    before = {k: v.copy() for k, v in model.items()}
    rep = htsr.analyze(model, randomize=True, seed=seed)
    assert rep.details["num_traps"].tolist() == [1, 0]
    out = htsr.remove_traps(model, seed=seed)
    # the user's dict and arrays are untouched; a new dict comes back
    assert out is not model and out["a.weight"] is not model["a.weight"]
    for k in model:
        np.testing.assert_array_equal(model[k], before[k])
    # the layer without traps is bit-identical
    assert out["b.weight"].dtype == before["b.weight"].dtype
    np.testing.assert_array_equal(out["b.weight"], before["b.weight"])
    # the trapped layer differs only at the located entries
    diff = out["a.weight"] - before["a.weight"]
    changed = set(zip(*np.nonzero(diff)))
    located = {(r, c) for r, c, _ in rep.traps.iloc[0]["entries"]}
    assert (11, 222) in located and changed <= located
    rest = np.ones_like(diff, dtype=bool)
    for r, c in located:
        rest[r, c] = False
    np.testing.assert_allclose(out["a.weight"][rest], before["a.weight"][rest], rtol=1e-6, atol=0)
    # by the trap's rank-one component: σ·u·v at the planted entry, close to the planted value
    assert -diff[11, 222] == pytest.approx(8.0, rel=0.05)
    assert abs(out["a.weight"][11, 222]) < 0.5
    # and no trap remains
    again = htsr.analyze(out, randomize=True, seed=seed)
    assert again.details["num_traps"].tolist() == [0, 0]


def test_remove_traps_on_torch_modules_copies_unless_inplace():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128))
    with torch.no_grad():
        model[0].weight[3, 4] = 6.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = htsr.remove_traps(model)
    assert out is not model
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the user's module is never modified
    assert out[0].weight.dtype == torch.float32
    assert abs(float(out[0].weight.detach()[3, 4])) < 0.5
    diff = (out[0].weight - before["0.weight"]).detach().numpy()
    changed = set(zip(*np.nonzero(diff)))
    assert (3, 4) in changed and len(changed) <= 10
    assert torch.equal(out[2].weight, before["2.weight"])
    assert torch.equal(out[0].bias, before["0.bias"])
    assert htsr.analyze(out, randomize=True).details["num_traps"].tolist() == [0, 0]
    same = htsr.remove_traps(model, inplace=True)
    assert same is model and abs(float(model[0].weight.detach()[3, 4])) < 0.5


def test_remove_traps_maps_conv_slices_back():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(128, 128, 3)
    with torch.no_grad():
        conv.weight.normal_(0.0, 1.0 / np.sqrt(128))
        conv.weight[5, 7, 1, 2] = 6.0
    model = torch.nn.Sequential(conv)
    rep = htsr.analyze(model, randomize=True)
    assert rep.traps.iloc[0]["slice_id"] == 5
    out = htsr.remove_traps(model)
    diff = (out[0].weight - model[0].weight).detach().numpy()
    changed = set(zip(*np.nonzero(diff)))
    assert (5, 7, 1, 2) in changed and len(changed) <= 10
    assert abs(float(out[0].weight.detach()[5, 7, 1, 2])) < 0.5  # the √½ conv scale is undone
    assert htsr.analyze(out, randomize=True).details["num_traps"].tolist() == [0]


def test_remove_traps_rejects_paths_and_other_objects(tmp_path):
    with pytest.raises(HtsrError, match="dict of numpy arrays"):
        htsr.remove_traps(str(tmp_path / "model.safetensors"))
    with pytest.raises(HtsrError):
        htsr.SVDSmoothing([1, 2, 3])


# ---------------------------------------------------------------- SVD smoothing and sharpening


def test_svd_smoothing_keeps_the_top_components():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((120, 80))
    small = rng.standard_normal((12, 3))  # M·rf = 3 < min_evals: skipped, unchanged
    model = {"fc.weight": W, "tiny.weight": small}
    out = htsr.SVDSmoothing(model, percent=0.25, method="svd")
    s = np.linalg.svd(W, compute_uv=False)
    s_out = np.linalg.svd(out["fc.weight"], compute_uv=False)
    assert np.linalg.matrix_rank(out["fc.weight"]) == 20
    np.testing.assert_allclose(s_out[:20], s[:20], rtol=1e-10)
    np.testing.assert_array_equal(out["tiny.weight"], small)
    np.testing.assert_array_equal(model["fc.weight"], W)


def test_svd_smoothing_detx_keeps_detx_num_components():
    W = np.random.default_rng(3).standard_normal((200, 100)) * np.linspace(0.2, 3.0, 100)
    k = int(htsr.analyze({"fc.weight": W}, detX=True).details["detX_num"][0])
    assert 0 < k < 100
    out = htsr.SVDSmoothing({"fc.weight": W})
    assert np.linalg.matrix_rank(out["fc.weight"]) == k


def test_svd_smoothing_conv_keeps_ceil_k_over_rf_per_slice():
    torch = pytest.importorskip("torch")
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 2))  # rf = 4, M = 16
    out = htsr.SVDSmoothing(model, percent=0.5, method="svd")  # k = int(0.5·16·4) = 32 → 8 per slice
    w = out[0].weight.detach().numpy()
    for i in range(2):
        for j in range(2):
            assert np.linalg.matrix_rank(w[:, :, i, j]) == 8
    assert not torch.equal(out[0].weight, model[0].weight)


def test_svd_smoothing_bad_options():
    with pytest.raises(OptionError, match="method"):
        htsr.SVDSmoothing({"fc.weight": np.ones((20, 10))}, method="nope")
    with pytest.raises(OptionError, match="percent"):
        htsr.SVDSmoothing({"fc.weight": np.ones((20, 10))}, percent=1.5)


def test_svd_sharpness_removes_the_trap_and_leaves_clean_layers():
    model = {"a.weight": trapped(0, value=10.0), "b.weight": clean_layer(0)}
    before = {k: v.copy() for k, v in model.items()}
    out = htsr.SVDSharpness(model)
    np.testing.assert_array_equal(out["b.weight"], before["b.weight"])
    np.testing.assert_array_equal(model["a.weight"], before["a.weight"])
    assert abs(out["a.weight"][11, 222]) < 0.5
    # apart from the trap the matrix barely moves (the removed component is localized on it)
    delta = out["a.weight"] - before["a.weight"]
    delta[11, 222] = 0.0
    assert np.linalg.norm(delta) < 0.1 * np.linalg.norm(before["a.weight"])
    assert htsr.analyze(out, randomize=True).details["num_traps"].tolist() == [0, 0]


def test_compat_transforms_return_copies():
    W = trapped(1)
    model = {"fc.weight": W.copy()}
    watcher = htsr.WeightWatcher(model=model)
    smoothed = watcher.SVDSmoothing(method="svd", percent=0.5)
    assert np.linalg.matrix_rank(smoothed["fc.weight"]) == 192
    sharp = watcher.SVDSharpness()
    assert abs(sharp["fc.weight"][11, 222]) < 0.5
    np.testing.assert_array_equal(model["fc.weight"], W)
    with pytest.raises(NotImplementedError, match="pool"):
        watcher.SVDSmoothing(pool=False)
