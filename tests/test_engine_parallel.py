"""The engine's parallel CPU path, its read-ahead bound, the batched GPU logic (with a CPU stand-in), and fast=True."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import htsr
from htsr import accel, engine
from htsr.blas import blas_single_thread
from htsr.config import AnalysisConfig, LayerType
from htsr.errors import OptionError
from htsr.matrices import geometry
from htsr.sources import open_source
from htsr.sources.base import WeightTensor
from htsr.spectral.esd import compute_esd
from htsr.treatment import HTSR


def _model(seed: int = 0) -> dict:
    """Seeded layers of several shapes: Gaussian and heavy-tailed dense, a conv, a rank-deficient and a broken one."""
    rng = np.random.default_rng(seed)
    sd = {}
    for i in range(5):
        sd[f"block{i}.q.weight"] = rng.standard_normal((96, 96)).astype(np.float32)
        sd[f"block{i}.k.weight"] = (rng.standard_t(3, (96, 96)) / 10).astype(np.float32)
        sd[f"block{i}.up.weight"] = rng.standard_normal((240, 96)).astype(np.float32)
    sd["conv.weight"] = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    low = rng.standard_normal((120, 5)) @ rng.standard_normal((5, 80))
    sd["lowrank.weight"] = low.astype(np.float32)
    sd["broken.weight"] = np.full((40, 30), np.nan, dtype=np.float32)
    return sd


def _details(report):
    return report.details.reset_index(drop=True)


@pytest.mark.parametrize("workers", [3, 8])
def test_any_worker_count_gives_the_same_table(workers):
    """Every CPU path pins BLAS to one thread per layer: any worker count gives the same bits."""
    sd = _model()
    two = _details(htsr.analyze(sd, workers=2, device="cpu"))
    par = _details(htsr.analyze(sd, workers=workers, device="cpu"))
    serial = _details(htsr.analyze(sd, workers=1, device="cpu"))
    assert list(par["longname"]) == list(two["longname"]) == list(serial["longname"])  # plan order kept
    assert (par["status"] == "invalid").sum() == 1
    for col in two.columns:
        a, b, c = two[col].to_numpy(), par[col].to_numpy(), serial[col].to_numpy()
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b, err_msg=col)
            np.testing.assert_array_equal(c, a, err_msg=col)
        else:
            assert [str(x) for x in a] == [str(x) for x in b] == [str(x) for x in c], col


def test_bad_workers_option():
    with pytest.raises(OptionError, match="workers"):
        AnalysisConfig(workers=-1)
    with pytest.raises(OptionError, match="workers"):
        AnalysisConfig(workers=1.5)


def _counting_plans(n: int, shape=(200, 100)):
    """Plans whose loads record how many tensors are held (loaded, not yet analyzed) at once."""
    state = {"held": 0, "max": 0, "lock": threading.Lock(), "threads": set()}
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(shape) for _ in range(n)]

    def loader(k):
        def load():
            with state["lock"]:
                state["held"] += 1
                state["max"] = max(state["max"], state["held"])
                state["threads"].add(threading.current_thread().name)
            time.sleep(0.005)
            return arrays[k].copy()
        return load

    config = AnalysisConfig(device="cpu")
    tensors = [WeightTensor(k + 1, f"l{k}", f"l{k}", LayerType.DENSE, shape, "float64", "<test>", f"l{k}.weight",
                            loader(k)) for k in range(n)]
    plans = [engine.Plan(t, geometry(t.shape), "", True) for t in tensors]
    return plans, config, state, arrays


def _release_when_analyzed(monkeypatch, state):
    """Count a tensor as no longer held once its layer is analyzed."""
    real = engine.analyze_plan

    def run_one(p, array, cfg, esd_fn=compute_esd, **kw):
        try:
            return real(p, array, cfg, esd_fn, **kw)
        finally:
            with state["lock"]:
                state["held"] -= 1

    monkeypatch.setattr(engine, "analyze_plan", run_one)


def test_read_ahead_is_bounded_and_off_the_main_thread(monkeypatch):
    plans, config, state, _ = _counting_plans(12)
    _release_when_analyzed(monkeypatch, state)
    outs = list(engine.run(plans, config.replace(workers=2)))
    assert [o[0].name for o in outs] == [f"l{k}" for k in range(12)]
    assert state["max"] <= 3  # workers + 1
    assert state["threads"] and all(name.startswith("htsr-read") for name in state["threads"])


def test_a_slow_first_layer_does_not_stall_the_other_workers(monkeypatch):
    """Layer 0 finishes only once the last layer has run: the other worker must go on meanwhile.

    The former window (advance only when its oldest layer finished) waited here for ever; the
    bound on tensors held and the plan order of the outputs stay.
    """
    plans, config, state, _ = _counting_plans(8)
    real = engine.analyze_plan
    last_ran = threading.Event()

    def run_one(p, array, cfg, esd_fn=compute_esd, **kw):
        try:
            if p.tensor.name == "l0":
                assert last_ran.wait(timeout=20), "the other worker stalled behind layer 0"
            return real(p, array, cfg, esd_fn, **kw)
        finally:
            if p.tensor.name == "l7":
                last_ran.set()
            with state["lock"]:
                state["held"] -= 1

    monkeypatch.setattr(engine, "analyze_plan", run_one)
    outs = list(engine.run(plans, config.replace(workers=2)))
    assert [o[0].name for o in outs] == [f"l{k}" for k in range(8)]
    assert all(o[0].status == "success" for o in outs)
    assert state["max"] <= 3  # workers + 1


def test_the_largest_layer_starts_first_and_outputs_keep_plan_order(monkeypatch):
    """A big layer last in plan order is read and started first; rows stay in plan order, bit-identical
    to one worker's, at most workers + 1 tensors held, and the progress counts every layer once."""
    rng = np.random.default_rng(3)
    shapes = [(60, 40)] * 6 + [(300, 120), (50, 30, 3, 3)]
    arrays = [(rng.standard_t(3, s) / 10) for s in shapes]
    state = {"held": 0, "max": 0, "lock": threading.Lock(), "reads": []}

    def loader(k):
        def load():
            with state["lock"]:
                state["held"] += 1
                state["max"] = max(state["max"], state["held"])
                state["reads"].append(k)
            return arrays[k].copy()
        return load

    kinds = [LayerType.DENSE] * 7 + [LayerType.CONV2D]
    tensors = [WeightTensor(k + 1, f"l{k}", f"l{k}", kinds[k], s, "float64", "<test>", f"l{k}.weight", loader(k))
               for k, s in enumerate(shapes)]
    plans = [engine.Plan(t, geometry(t.shape), "", True) for t in tensors]
    config = AnalysisConfig(device="cpu", randomize=True)
    assert engine.submission_order(plans, True)[:2] == [6, 7]  # 300×120 (randomized), then the 9-slice conv
    _release_when_analyzed(monkeypatch, state)

    class Count:
        def __init__(self):
            self.names = []

        def update(self, name=""):
            self.names.append(name)

    bar = Count()
    two = list(engine.run(plans, config.replace(workers=2), progress=bar))
    assert state["reads"][:2] == [6, 7]  # the reader follows the submission order
    assert state["max"] <= 3  # workers + 1
    assert sorted(bar.names) == [f"l{k}" for k in range(8)]
    state["reads"].clear()
    one = list(engine.run(plans, config.replace(workers=1)))
    assert state["reads"] == list(range(8))  # one worker: plan order
    assert [o[0].name for o in two] == [o[0].name for o in one] == [f"l{k}" for k in range(8)]
    for a, b in zip(two, one):
        (ra,), (rb,) = a, b
        np.testing.assert_array_equal(ra.evals, rb.evals)
        np.testing.assert_array_equal(ra.randomized.evals, rb.randomized.evals)
        assert (ra.fit.alpha, ra.traps.num_traps) == (rb.fit.alpha, rb.traps.num_traps)


def _cpu_stand_in(stacks):
    """What the GPU computes, on the CPU: per-slice float64 Gram eigenvalues of every stack, concatenated."""
    w = np.concatenate([s.astype(np.float64) for s in stacks])
    wt = np.swapaxes(w, 1, 2)
    x = wt @ w if w.shape[1] >= w.shape[2] else w @ wt
    return np.linalg.eigvalsh(x).astype(np.float64)


@pytest.mark.parametrize("pool", [True, False])
def test_cuda_batching_logic_with_a_cpu_stand_in(monkeypatch, pool):
    """Same-shape layers batched together, split back to the right layers, broken ones reported: the CPU table."""
    calls = []

    def fake(stacks):
        calls.append([s.shape for s in stacks])
        return _cpu_stand_in(stacks)

    monkeypatch.setattr(accel, "gram_eigvalsh_cuda", fake)
    sd = _model(3)
    config = AnalysisConfig(device="cpu", pool=pool)
    plans = engine.plan(open_source(sd), config)
    cpu = [r for o in engine.run(plans, config, device="cpu") for r in o]
    gpu = [r for o in engine.run(plans, config, device="cuda") for r in o]
    assert len(cpu) == len(gpu)
    for a, b in zip(cpu, gpu):
        assert a.longname == b.longname and a.status == b.status
        if a.status == "success":
            assert b.fit.alpha == pytest.approx(a.fit.alpha, rel=1e-10)
            assert b.esd.sv_max == pytest.approx(a.esd.sv_max, rel=1e-10)
            assert b.esd.rank_loss == a.esd.rank_loss
    assert any(len(c) > 1 for c in calls)  # layers were batched
    assert all(len({s[1:] for s in c}) == 1 for c in calls)  # one shape per batch


def test_batches_respect_shape_and_budget():
    plans, _, _, _ = _counting_plans(5, shape=(100, 50))
    other, _, _, _ = _counting_plans(2, shape=(50, 100))
    seq = plans[:3] + other + plans[3:]
    batches = engine._batches(seq, budget=8 * 100 * 50 * 2)
    assert [len(b) for b in batches] == [2, 1, 2, 2]


def test_fast_is_opt_in_and_close():
    assert AnalysisConfig().fast is False
    rng = np.random.default_rng(5)
    sd = {"a.weight": rng.standard_normal((600, 300)), "b.weight": rng.standard_t(2.5, (500, 400)),
          "c.weight": rng.standard_normal((300, 300)) @ np.diag(np.linspace(0.1, 3, 300))}
    exact = _details(htsr.analyze(sd, device="cpu"))
    fast = _details(htsr.analyze(sd, device="cpu", fast=True))
    np.testing.assert_allclose(fast["alpha"], exact["alpha"], rtol=1e-4)
    np.testing.assert_allclose(fast["lambda_max"], exact["lambda_max"], rtol=1e-5)
    assert not np.array_equal(fast["alpha"].to_numpy(), exact["alpha"].to_numpy())  # really a different route


def test_two_stage_solver_matches_eigvalsh(monkeypatch):
    """The large-matrix route (LAPACK syevd_2stage through numpy's OpenBLAS) gives eigvalsh's values."""
    from htsr.spectral import esd

    if esd._two_stage("float64") is None:
        pytest.skip("this numpy's OpenBLAS has no LAPACKE syevd_2stage")
    monkeypatch.setattr(esd, "TWO_STAGE_MIN", 16)
    rng = np.random.default_rng(9)
    for shape in ((300, 120), (80, 200), (150, 150)):
        w = rng.standard_t(4, shape)
        x = esd.gram(w)
        ref = np.linalg.eigvalsh(x)
        got = esd.eigvalsh_gram(x.copy()[None])[0]
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * ref[-1])
        assert np.all(np.diff(got) >= 0)
    stack = rng.standard_normal((3, 40, 30))
    np.testing.assert_allclose(esd.compute_esd(stack, 40).evals,
                               np.sort(np.concatenate([np.linalg.svd(s, compute_uv=False) ** 2 for s in stack])),
                               rtol=1e-9)


def test_two_stage_self_check_rejects_a_wrong_or_failing_routine():
    """The ctypes route is trusted only after it reproduces eigvalsh on a test matrix."""
    from htsr.spectral import esd

    def right(x, out):
        out[:] = np.linalg.eigvalsh(x)

    def wrong(x, out):
        out[:] = np.linalg.eigvalsh(x) * (1 + 1e-6)

    def failing(x, out):
        raise np.linalg.LinAlgError("info=3")

    assert esd._agrees_with_eigvalsh(right, "float64") and esd._agrees_with_eigvalsh(right, "float32")
    assert not esd._agrees_with_eigvalsh(wrong, "float64")
    assert not esd._agrees_with_eigvalsh(failing, "float64")


@pytest.mark.parametrize("components, blocks", [(0, True), (20, True), (0, False)])
def test_a_large_randomized_layer_computes_its_esd_beside_the_shuffle(monkeypatch, components, blocks):
    """A large layer with randomize (blocked, or whole as the compat class reads it): its float64 ESD
    runs on a helper thread while the worker shuffles; every column is what the one-after-the-other
    computation gives (one shuffle; with a PEFT rank of 20 the row has fewer than 100 eigenvalues and
    pools five)."""
    from htsr import blocked, prepare

    rng = np.random.default_rng(7)
    W = (rng.standard_t(3, (250, 120)) / 10).astype(np.float32)
    t = WeightTensor(1, "big", "big", LayerType.DENSE, W.shape, "float32", "<test>", "big.weight",
                     lambda: W.copy(), num_components=components or None)
    p = engine.Plan(t, geometry(t.shape), "", True)
    config = AnalysisConfig(device="cpu", randomize=True)
    monkeypatch.setattr(blocked, "BLOCKED_MIN_ELEMENTS", 1000 if blocks else 10**9)
    monkeypatch.setattr(engine, "BESIDE_MIN_ELEMENTS", 1000)
    threads = []
    real_blocked, real_esd = blocked.blocked_esd, compute_esd

    def esd_fn(*a, **k):
        threads.append(threading.current_thread().name)
        return real_esd(*a, **k)

    monkeypatch.setattr(blocked, "blocked_esd",
                        lambda *a, **k: threads.append(threading.current_thread().name) or real_blocked(*a, **k))
    with blas_single_thread():  # as engine.run: the pin is process-wide, so it is set around both threads
        (row,) = engine.analyze_plan(p, engine.load_tensor(p, blocks=True), config, esd_fn)
        assert threads and threads[0].startswith("htsr-esd")
        # the one-after-the-other route: the ESD, then the shuffles and the trap search
        if blocks:
            stack = W[None]
            esd, _ = real_blocked(engine.load_tensor(p, blocks=True), 250, "big")
        else:
            stack, _ = prepare.layer_stack(W.astype(np.float64), t, p.geometry, config, HTSR)
            esd = real_esd(stack, 250)
        evals = esd.evals if not components else np.sort(esd.evals)[-components:]
        rand, traps = prepare.randomize_row(stack, evals, p.geometry, 0, 1, None, HTSR)
    np.testing.assert_array_equal(row.evals, evals)
    np.testing.assert_array_equal(row.randomized.evals, rand.evals)
    assert row.randomized.replicas == rand.replicas == (5 if components else 1)
    assert repr(row.randomized) == repr(rand) and repr(row.traps) == repr(traps)  # (nan-safe field by field)
    config1 = config.replace(workers=1)  # one worker: everything on it
    threads.clear()
    with blas_single_thread():
        (one,) = engine.analyze_plan(p, engine.load_tensor(p, blocks=True), config1, esd_fn)
    assert threads and not threads[0].startswith("htsr-esd")
    assert repr(one.randomized) == repr(rand) and repr(one.traps) == repr(traps)


def test_spare_tells_a_large_layer_when_the_other_workers_have_nothing_left(monkeypatch):
    """The engine's ``spare()`` (given to blocked_esd): false while other layers wait or run, true once the
    large layer runs alone with a worker idle; never true with one worker."""
    from htsr import blocked

    rng = np.random.default_rng(2)
    model = {"big.weight": rng.standard_normal((400, 300)), "a.weight": rng.standard_normal((40, 30)),
             "b.weight": rng.standard_normal((50, 30))}
    monkeypatch.setattr(blocked, "BLOCKED_MIN_ELEMENTS", 100_000)  # only big is read in blocks
    seen, patience = [], [10.0]
    real = blocked.blocked_esd

    def watch(m, *a, spare=None, **k):
        first = spare() if spare else None
        deadline = time.monotonic() + patience[0]
        while spare and not spare() and time.monotonic() < deadline:  # the two small layers finish meanwhile
            time.sleep(0.01)
        seen.append((first, spare() if spare else None))
        return real(m, *a, spare=spare, **k)

    monkeypatch.setattr(blocked, "blocked_esd", watch)
    two = htsr.analyze(model, workers=2)
    assert seen == [(False, True)]  # big starts first (most expensive), beside the others; then alone
    seen.clear()
    patience[0] = 0.5  # one worker: spare() stays false
    one = htsr.analyze(model, workers=1)
    assert seen == [(False, False)]
    assert two.details.equals(one.details)
