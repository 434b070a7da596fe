"""Randomized ESD, correlation-trap detection and location, the mean's outlier, seeds."""

from __future__ import annotations

import numpy as np
import pytest

import htsr
from htsr.config import AnalysisConfig, LayerType
from htsr.engine import analyze_array
from htsr.matrices import geometry
from htsr.report import SCHEMA, column_groups, trap_tables
from htsr.sources import WeightTensor
from htsr.spectral import randomize
from htsr.spectral.randomize import jensen_shannon, layer_rng, permutation, permutations, shuffle_stack
from htsr.spectral.traps import mean_outlier_eval, mean_outlier_overlap


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """These are many small eigenproblems: one BLAS thread each is fastest and immune to a busy machine."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield

N = 512
RAND = AnalysisConfig(randomize=True)
RAND_MP = AnalysisConfig(randomize=True, mp_fit=True)


def gaussian(seed: int, mean: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, N)) / np.sqrt(N) + mean


class Extras:
    """One dense layer's report columns (Python values) and trap rows, as the engine computes them."""

    def __init__(self, W: np.ndarray, config: AnalysisConfig, layer_id: int) -> None:
        t = WeightTensor(layer_id, "fc", "fc", LayerType.DENSE, W.shape, str(W.dtype), "<test>", "fc.weight",
                         lambda: W)
        (result,) = analyze_array(t, geometry(W.shape), W, config)
        groups = column_groups(config)
        self.result = result
        self.columns = {c.name: c.value(result) for c in SCHEMA if c.group in groups}
        self.traps = trap_tables([result])[0].to_dict(orient="records")


def extras_of(W: np.ndarray, config: AnalysisConfig = RAND, layer_id: int = 1) -> Extras:
    return Extras(W, config, layer_id)


# ---------------------------------------------------------------- shuffling


def test_shuffle_keeps_each_slice_multiset_and_leaves_the_input_alone():
    stack = np.stack([np.arange(12.0).reshape(3, 4) + 100 * s for s in range(3)])
    before = stack.copy()
    out = shuffle_stack(stack, np.random.default_rng(0))
    np.testing.assert_array_equal(stack, before)
    assert out.shape == stack.shape and out is not stack
    for s in range(3):  # each slice permuted within itself
        assert sorted(out[s].ravel()) == sorted(stack[s].ravel())
    assert not np.array_equal(out, stack)


def test_permutations_replay_the_shuffle():
    stack = np.random.default_rng(1).standard_normal((4, 30, 20))
    shuffled = shuffle_stack(stack, layer_rng(3, 7, 0), dtype=np.float32)
    perms = permutations(stack.shape, layer_rng(3, 7, 0))
    for s in range(4):
        np.testing.assert_array_equal(shuffled[s].ravel(), stack[s].ravel()[perms[s]].astype(np.float32))


def test_permutations_replay_the_shuffle_of_a_large_slice():
    """Slices from SORT_MIN elements take the sorted-keys route; the replay must match it too."""
    stack = np.random.default_rng(4).standard_normal((2, 400, 300))
    assert stack[0].size >= randomize.SORT_MIN
    rng = layer_rng(0, 1, 0)
    first, second = shuffle_stack(stack, rng), shuffle_stack(stack, rng)  # a replica from the same generator
    for replica, shuffled in enumerate((first, second)):
        perms = permutations(stack.shape, layer_rng(0, 1, 0), replica=replica)
        for s in range(2):
            assert np.array_equal(np.sort(perms[s]), np.arange(stack[s].size))
            np.testing.assert_array_equal(shuffled[s].ravel(), stack[s].ravel()[perms[s]])
    assert not np.array_equal(first, second)


def _chi2_pvalue(perms: np.ndarray, n: int) -> float:
    from itertools import permutations as all_orders

    from scipy.stats import chisquare

    index = {p: k for k, p in enumerate(all_orders(range(n)))}
    counts = np.bincount([index[tuple(p)] for p in perms.tolist()], minlength=len(index))
    return float(chisquare(counts).pvalue)


def test_sorted_keys_permutation_is_uniform(monkeypatch):
    monkeypatch.setattr(randomize, "SORT_MIN", 1)
    rng = np.random.default_rng(5)
    perms = np.array([permutation(4, rng) for _ in range(24_000)])
    assert _chi2_pvalue(perms, 4) > 1e-4
    big = permutation(200_000, np.random.default_rng(6))
    assert np.array_equal(np.sort(big), np.arange(200_000))
    assert abs(np.corrcoef(big, np.arange(200_000))[0, 1]) < 0.01


class _FewKeys:
    """A generator whose raw keys have only 2 distinct random parts: ties everywhere, broken by shuffle."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        outer = self

        class Bits:
            def random_raw(self, n: int) -> np.ndarray:
                return outer.rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63)

        self.bit_generator = Bits()

    def shuffle(self, x: np.ndarray) -> None:
        self.rng.shuffle(x)


def test_ties_of_the_random_keys_are_broken_uniformly(monkeypatch):
    """With only two key values nearly every pair ties: without the tie shuffle the order would be biased."""
    monkeypatch.setattr(randomize, "SORT_MIN", 1)
    rng = _FewKeys(7)
    perms = np.array([permutation(4, rng) for _ in range(24_000)])
    assert all(np.array_equal(np.sort(p), np.arange(4)) for p in perms[:100])
    assert _chi2_pvalue(perms, 4) > 1e-4


def test_same_seed_same_shuffle_other_seed_other_shuffle():
    W = np.random.default_rng(2).standard_normal((1, 50, 40))
    a = shuffle_stack(W, layer_rng(0, 5, 0))
    b = shuffle_stack(W, layer_rng(0, 5, 0))
    c = shuffle_stack(W, layer_rng(1, 5, 0))
    d = shuffle_stack(W, layer_rng(0, 6, 0))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_jensen_shannon_matches_scipy():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(3)
    p, q = rng.gamma(1.0, 1.0, 200), rng.gamma(1.0, 2.0, 200)
    assert jensen_shannon(p, q) == pytest.approx(float(jensenshannon(p, q)), rel=1e-12)
    assert jensen_shannon(p, p) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        jensen_shannon(p, q[:10])


# ---------------------------------------------------------------- the mean's outlier


@pytest.mark.parametrize("shape,mean", [((1000, 1000), 0.01), ((2000, 500), 0.02), ((1500, 600), -0.015)])
def test_mean_outlier_prediction_matches_the_largest_eigenvalue(shape, mean):
    rows, cols = shape
    W = np.random.default_rng(5).standard_normal(shape) * 0.03 + mean
    pred = mean_outlier_eval(float(W.mean()), float(W.var()), rows, cols)
    assert np.linalg.norm(W, 2) ** 2 == pytest.approx(pred, rel=0.03)


@pytest.mark.parametrize("shape,t2", [((1536, 384), 1.0), ((384, 1536), 2.0), ((512, 512), 5.0)])
def test_mean_outlier_overlap_prediction(shape, t2):
    rows, cols = shape
    N, M = max(shape), min(shape)
    mean = np.sqrt(t2 / (N * M))  # element variance 1/N: θ̃² = mean²·M·N
    got = []
    for seed in range(4):
        W = np.random.default_rng(seed).standard_normal(shape) / np.sqrt(N) + mean
        U, _, Vt = np.linalg.svd(W, full_matrices=False)
        got.append(U[:, 0].sum() ** 2 / rows * Vt[0].sum() ** 2 / cols)
    assert np.mean(got) == pytest.approx(mean_outlier_overlap(mean, 1.0 / N, rows, cols), abs=0.05)


@pytest.mark.parametrize("shape", [(1536, 384), (384, 1536)])
def test_mean_spike_near_the_bbp_threshold_is_no_trap(shape):
    N, M = max(shape), min(shape)
    mean = np.sqrt(1.0 / (N * M))  # θ̃² = 1, just above √c = 0.5
    for seed in range(6):
        W = np.random.default_rng(seed).standard_normal(shape) / np.sqrt(N) + mean
        cols = extras_of(W, layer_id=seed).columns
        assert cols["num_traps"] == 0
        assert cols["rand_mean_spike"] == (cols["rand_num_spikes"] == 1)


def test_no_outlier_predicted_below_the_bbp_threshold():
    # θ̃² = m²·M/v = 0.5 < sqrt(c) = 1
    assert np.isnan(mean_outlier_eval(np.sqrt(0.5 / 100), 1.0, 100, 100))
    assert np.isnan(mean_outlier_eval(0.0, 0.0, 10, 10))  # an all-zero matrix has no outlier
    assert mean_outlier_eval(0.5, 0.0, 10, 10) == 25.0  # a constant one: its eigenvalue m²·N·M
    assert mean_outlier_overlap(0.5, 0.0, 10, 10) == 1.0


# ---------------------------------------------------------------- detection over seeds


def _flagged_at(W: np.ndarray, seed: int) -> tuple[bool, bool, dict]:
    ex = extras_of(W, layer_id=seed)
    return ex.columns["num_traps"] > 0, bool(ex.traps), ex


@pytest.mark.parametrize("value", [4.0, 10.0])
def test_planted_element_is_flagged_and_located(value):
    seeds = range(50)  # 50 seeds per value: 100 planted layers in all
    found = located = 0
    for seed in seeds:
        W = gaussian(seed)
        r, c = (seed * 37) % N, (seed * 91 + 5) % N
        W[r, c] = value
        ex = extras_of(W, layer_id=seed)
        if ex.columns["num_traps"] >= 1:
            found += 1
            top = ex.traps[0]["entries"][0]
            located += (top[0], top[1]) == (r, c) and top[2] == value
            assert ex.traps[0]["ratio"] == pytest.approx(ex.traps[0]["trap_eval"] / ex.traps[0]["bulk_max"])
    assert found >= 0.95 * len(seeds)
    assert located >= 0.95 * len(seeds)


def test_clean_gaussian_is_rarely_flagged():
    flagged = sum(extras_of(gaussian(1000 + seed), layer_id=seed).columns["num_traps"] > 0 for seed in range(100))
    assert flagged <= 5


def test_rank_one_signal_is_a_spike_of_the_original_esd_not_a_trap():
    for seed in range(8):
        rng = np.random.default_rng(seed)
        u, v = rng.standard_normal(N), rng.standard_normal(N)
        W = gaussian(seed) + 5.0 * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
        ex = extras_of(W, RAND_MP, layer_id=seed)
        assert ex.columns["num_spikes"] >= 1
        assert ex.columns["num_traps"] == 0
        assert ex.columns["rand_num_spikes"] == 0
        assert ex.traps == []


def test_mean_shift_gives_the_mean_spike_and_no_trap():
    for seed in range(10):
        ex = extras_of(gaussian(seed, mean=0.01), layer_id=seed)
        cols = ex.columns
        assert cols["rand_num_spikes"] == 1
        assert cols["rand_mean_spike"] is True
        assert cols["num_traps"] == 0
        assert cols["rand_mean_spike_eval"] == pytest.approx(cols["max_rand_eval"], rel=0.03)
    centred = extras_of(gaussian(0), layer_id=0).columns
    assert centred["rand_num_spikes"] == 0 and centred["rand_mean_spike"] is False


@pytest.mark.parametrize("value", [4.0, 10.0])
def test_mean_shift_plus_planted_element_is_exactly_one_trap(value):
    for seed in range(5):
        W = gaussian(seed, mean=0.01)
        W[17, 300] = value
        ex = extras_of(W, layer_id=seed)
        assert ex.columns["rand_mean_spike"] is True
        assert ex.columns["rand_num_spikes"] == 2
        assert ex.columns["num_traps"] == 1
        assert ex.traps[0]["entries"][0] == (17, 300, value)


# ---------------------------------------------------------------- through htsr.analyze


def test_analyze_trap_report_conv_slice_and_seeds():
    rng = np.random.default_rng(9)
    conv = rng.standard_normal((128, 128, 3, 3)) / np.sqrt(128)
    conv[5, 7, 1, 2] = 8.0  # kernel position 1·3 + 2 = 5
    dense = rng.standard_normal((300, 200)) / np.sqrt(300)
    model = {"conv.weight": conv, "fc.weight": dense}
    before = {k: v.copy() for k, v in model.items()}
    rep = htsr.analyze(model, randomize=True)
    for k in model:
        np.testing.assert_array_equal(model[k], before[k])
    traps = rep.traps
    assert list(traps.columns) == list(htsr.schema.TRAPS.names)
    assert len(traps) == 1 and traps.iloc[0]["name"] == "conv" and traps.iloc[0]["slice_id"] == 5
    r, c, val = traps.iloc[0]["entries"][0]
    assert (r, c) == (5, 7) and val == pytest.approx(8.0 * np.sqrt(0.5))  # analyzed (conv2d-scaled) value
    d = rep.details.set_index("name")
    assert d.loc["conv", "num_traps"] == 1 and d.loc["fc", "num_traps"] == 0
    assert rep.summary["num_traps"] == 1
    again = htsr.analyze(model, randomize=True)
    assert again.details.equals(rep.details)
    other = htsr.analyze(model, randomize=True, seed=1)
    assert not np.array_equal(other.details["max_rand_eval"], rep.details["max_rand_eval"])
    assert other.details["num_traps"].tolist() == rep.details["num_traps"].tolist()


def test_small_layers_use_five_replicas_and_get_esd_replays_the_shuffle():
    W = np.random.default_rng(4).standard_normal((200, 50))
    rep = htsr.analyze({"fc.weight": W}, randomize=True, seed=3)
    (layer,) = rep.layers
    rand = layer.randomized.evals
    assert rand.size == 5 * 50 and layer.randomized.replicas == 5
    watcher = htsr.WeightWatcher(model={"fc.weight": W})
    first = watcher.get_ESD(layer=1, random=True, seed=3)
    # the first replica of analyze is the shuffle get_ESD makes: the same values, bit for bit
    np.testing.assert_array_equal(first, layer.randomized.first)
    assert rep.details["rand_distance"].iloc[0] == pytest.approx(
        jensen_shannon(np.sort(np.linalg.svd(W, compute_uv=False) ** 2), first), rel=1e-4)
    assert first.size == 50
    nearest = np.min(np.abs(rand[None, :] - first[:, None]), axis=1) / first
    assert nearest.max() == 0.0


def test_detx_columns():
    W = np.random.default_rng(6).standard_normal((300, 100))
    d = htsr.analyze({"fc.weight": W}, detX=True).details
    ev = np.sort(np.linalg.svd(W, compute_uv=False) ** 2)
    x = ev * ev.size / ev.sum()
    idx = next(i for i in range(x.size - 1, 0, -1) if np.prod(x[i:]) < 1.0)
    assert d["detX_num"].iloc[0] == x.size - idx
    assert d["detX_val"].iloc[0] == pytest.approx(ev[idx], rel=1e-9)  # original units, as the reference
    # the reference's numbers for this matrix (weightwatcher 0.7.7 on a bias-free torch Linear holding W)
    assert d["detX_num"].iloc[0] == 85
    assert d["detX_val"].iloc[0] == pytest.approx(115.061322, rel=1e-6)


def test_constant_matrix_is_the_mean_spike_not_a_trap():
    """m·11ᵀ survives any shuffle unchanged: its one eigenvalue m²·N·M is the mean outlier."""
    import warnings

    sd = {"const.weight": np.full((40, 30), 0.5)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # degenerate layers make no numpy warnings reach the user
        row = htsr.analyze(sd, randomize=True, mp_fit=True).details.iloc[0]
    assert row["rand_mean_spike"]
    assert row["rand_mean_spike_eval"] == pytest.approx(0.25 * 40 * 30)
    assert row["max_rand_eval"] == pytest.approx(0.25 * 40 * 30, rel=1e-5)
    assert row["num_traps"] == 0


@pytest.mark.parametrize("shape", [(1000, 300), (300, 1000)])
@pytest.mark.parametrize("k", [1, 3, 17])
def test_trap_vectors_widened_in_slabs_are_bit_identical(monkeypatch, shape, k):
    """The top singular vectors come out the same whether w is widened to float64 whole or in slabs."""
    from htsr.spectral import traps

    w = np.random.default_rng([7, k]).standard_t(3, size=shape).astype(np.float32)
    whole = traps._top_vectors(w, k)
    monkeypatch.setattr(traps, "WIDEN_CHUNK", 64 * 300)  # slabs of 64 rows (columns)
    slabs = traps._top_vectors(w, k)
    for a, b in zip(whole, slabs):
        np.testing.assert_array_equal(a, b)


def test_ties_in_chunks_are_those_of_the_whole_array(monkeypatch):
    """``_ties`` (chunked) finds every pair of sorted keys sharing their random part, also across chunk edges."""
    from htsr.spectral import randomize

    rng = np.random.default_rng(3)
    mask = np.uint64((1 << 10) - 1)
    keys = rng.integers(0, 40, 1000, dtype=np.uint64) << np.uint64(10) | np.arange(1000, dtype=np.uint64)
    keys.sort()  # 40 random parts for 1000 keys: long runs of ties, across every chunk edge below
    want = np.flatnonzero((keys[1:] ^ keys[:-1]) <= mask)
    for chunk in (1, 7, 64, 999, 1000, 5000):
        monkeypatch.setattr(randomize, "TIE_CHUNK", chunk)
        np.testing.assert_array_equal(randomize._ties(keys, mask), want)
    assert randomize._ties(keys[:1], mask).size == 0 and want.size > 900
