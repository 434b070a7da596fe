"""htsr.Monitor: the plain-loop API, the append-only history, flags, figures and trainer callbacks."""

from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

import htsr
from htsr.errors import HtsrError, OptionError
from htsr.monitor_views import make_hf_callback, make_lightning_callback


def weights(t: float, seed: int = 0) -> dict:
    """Gaussian (alpha ≈ 5.7) mixed with a growing Cauchy part (alpha ≈ 1.6 from t = 0.05 on)."""
    rng = np.random.default_rng(seed)
    G, C = rng.standard_normal((200, 100)), rng.standard_cauchy((200, 100))
    return {"fc.weight": (1 - t) * G + t * C, "head.weight": rng.standard_normal((120, 60))}


def test_plain_torch_loop_history_and_reopen(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    X, y = torch.randn(128, 32), torch.randint(0, 16, (128,))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    path = tmp_path / "hist.jsonl"
    monitor = htsr.Monitor(every=3, path=path)
    records = []
    for step in range(7):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
        records.append(monitor.step(model, step, val_loss=1.0 / (step + 1)))
    assert [r is not None for r in records] == [True, False, False, True, False, False, True]
    lines = path.read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 3, 6]
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert set(first["layers"]) == {"0", "2"}
    assert first["layers"]["0"]["rel_change"] == 0.0
    w0 = monitor.w0["0"]
    W = model[0].weight.detach().double().numpy()
    assert last["layers"]["0"]["rel_change"] == pytest.approx(np.linalg.norm(W - w0) / np.linalg.norm(w0), rel=1e-12)
    assert last["layers"]["0"]["num_traps"] is not None and isinstance(last["layers"]["0"]["rand_mean_spike"], bool)
    assert last["mean_alpha"] == pytest.approx(np.mean([v["alpha"] for v in last["layers"].values()]))
    # reopening continues the history and keeps W0
    again = htsr.Monitor(every=3, path=path)
    assert [r["step"] for r in again.history] == [0, 3, 6]
    assert np.array_equal(again.w0["0"], w0)
    rec = again.step(model, 9)
    assert rec["layers"]["0"]["rel_change"] == pytest.approx(last["layers"]["0"]["rel_change"], rel=1e-12)
    assert len(path.read_text().splitlines()) == 4
    frame = again.to_frame()
    assert list(frame["step"].unique()) == [0, 3, 6, 9] and len(frame) == 8


def test_crash_mid_line_loses_only_that_line(tmp_path):
    path = tmp_path / "new" / "folder" / "h.jsonl"  # created on the first record
    m = htsr.Monitor(every=1, path=path)
    m.step(weights(0.0), 0)
    m.step(weights(0.0), 1)
    text = path.read_text()
    path.write_text(text + '{"step": 2, "lay')  # the process died while writing
    again = htsr.Monitor(every=1, path=path)
    assert [r["step"] for r in again.history] == [0, 1]
    assert path.read_text() == text
    again.step(weights(0.0), 2)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [0, 1, 2]


def test_flags_alpha_below_2_and_falling_while_val_rises():
    m = htsr.Monitor(every=1, patience=3, randomize=False)
    for step, (t, val) in enumerate([(0.0, 1.0), (0.0, 0.8), (0.02, 0.9), (0.05, 1.0), (1.0, 1.1)]):
        m.step(weights(t), step, val_loss=val)
    alphas = [r["mean_alpha"] for r in m.history]
    assert alphas[0] == alphas[1] and alphas[2] < alphas[1] and alphas[3] < alphas[2]
    names = {n: s for s, n in reversed(m.flags)}
    assert names["alpha_falling_val_rising"] == 3  # steps 1..3: alpha fell twice while val rose twice
    below = [r["step"] for r in m.history if r["mean_alpha"] < 2]
    assert (names.get("mean_alpha_below_2") is None) == (not below)
    if below:
        assert names["mean_alpha_below_2"] == below[0]
    assert all(r["num_traps"] is None for r in m.history)  # randomize=False counts no traps


def test_trap_flag_when_a_trap_appears():
    rng = np.random.default_rng(3)
    G = rng.standard_normal((200, 100))
    spiked = G.copy()
    spiked[3, 4] = 60.0  # one huge element: a correlation trap in the shuffled ESD
    m = htsr.Monitor(every=1)
    m.step({"fc.weight": G}, 0)
    m.step({"fc.weight": spiked}, 1)
    assert m.history[0]["layers"]["fc"]["num_traps"] == 0
    assert m.history[1]["layers"]["fc"]["num_traps"] >= 1
    assert (1, "trap") in m.flags and not any(s == 0 for s, _ in m.flags)


def test_plot_and_html(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    m = htsr.Monitor(every=1)
    for s, t in enumerate((0.0, 0.02, 0.2)):
        m.step(weights(t), s, val_loss=float(s))
    fig = m.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert len(fig.axes[0].lines) >= 3  # two layers and the mean
    page = m.to_html(tmp_path / "m.html")
    assert (tmp_path / "m.html").read_text() == page
    assert "data:image/png;base64," in page and page.count("<tr>") >= 4 and "head" in page


def test_bad_options_and_files(tmp_path):
    with pytest.raises(OptionError, match="every"):
        htsr.Monitor(every=0)
    with pytest.raises(OptionError, match="patience"):
        htsr.Monitor(patience=1)
    with pytest.raises(htsr.UnknownOptionError):
        htsr.Monitor(no_such_option=1)
    with pytest.raises(HtsrError, match="folder"):
        htsr.Monitor(path=tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('not json\n{"step": 1}\n')
    with pytest.raises(HtsrError, match="line 1"):
        htsr.Monitor(path=bad)
    other = tmp_path / "other.jsonl"
    other.write_text('{"step": 1}\n')
    with pytest.raises(HtsrError, match="not a monitor record"):
        htsr.Monitor(path=other)


def test_model_is_not_modified():
    w = weights(0.1)
    before = {k: v.copy() for k, v in w.items()}
    htsr.Monitor(every=1).step(w, 0)
    assert all(np.array_equal(before[k], w[k]) for k in w)


class _FakeState(SimpleNamespace):
    pass


def test_hf_callback_with_a_fake_base():
    m = htsr.Monitor(every=2, randomize=False)
    cb = make_hf_callback(m, object)
    state = _FakeState(global_step=0)
    cb.on_step_end(None, state, None, model=weights(0.0))
    cb.on_evaluate(None, state, None, metrics={"eval_loss": 0.7})
    for step in (1, 2):
        state.global_step = step
        cb.on_step_end(None, state, None, model=weights(0.0))
    assert [r["step"] for r in m.history] == [0, 2]
    assert m.history[0]["val_loss"] is None and m.history[1]["val_loss"] == 0.7


@pytest.mark.slow
def test_hf_callback_is_a_real_trainer_callback():
    tc = pytest.importorskip("transformers.trainer_callback")
    m = htsr.Monitor(every=1, randomize=False)
    cb = m.huggingface_callback()
    assert isinstance(cb, tc.TrainerCallback)
    cb.on_step_end(None, _FakeState(global_step=5), None, model=weights(0.0))
    assert m.history[0]["step"] == 5


def test_lightning_callback_with_a_fake_trainer():
    m = htsr.Monitor(every=1, randomize=False)
    cb = make_lightning_callback(m, object)
    trainer = SimpleNamespace(global_step=4, callback_metrics={"val_loss": 0.25})
    cb.on_validation_end(trainer, None)
    cb.on_train_batch_end(trainer, weights(0.0), None, None, 0)
    assert m.history[0]["step"] == 4 and m.history[0]["val_loss"] == 0.25
    try:
        import lightning  # noqa: F401
    except ImportError:
        try:
            import pytorch_lightning  # noqa: F401
        except ImportError:
            with pytest.raises(HtsrError, match="lightning"):
                m.lightning_callback()
            return
    assert hasattr(m.lightning_callback(), "on_train_batch_end")
    assert not math.isnan(m.history[0]["mean_alpha"])


def test_default_time_budget_keeps_overhead_within_bound():
    """every=None: with a fake clock, the monitor analyzes only while its time stays ≤ 5 % of training time."""
    now = [0.0]
    m = htsr.Monitor(randomize=False)
    m._clock = lambda: now[0]
    w = weights(0.0)
    from htsr import monitor as mon

    real = mon.Monitor._analyze

    def slow_analyze(self, *a):
        now[0] += 1.0  # every analysis costs one (fake) second
        return real(self, *a)

    mon.Monitor._analyze = slow_analyze
    try:
        analyzed = []
        for step in range(400):
            if m.step(w, step) is not None:
                analyzed.append(step)
            now[0] += 0.5  # half a second of training per step
    finally:
        mon.Monitor._analyze = real
    # 200 s of training allow 10 s of monitoring: the first analysis, then one whenever the budget allows
    assert analyzed[0] == 0 and 8 <= len(analyzed) <= 10
    assert m.overhead <= 0.05 + 1e-9
    assert all(b - a >= 40 for a, b in itertools.pairwise(analyzed[1:]))  # spaced ≥ 20 s of training apart
