"""htsr.TempBalance: parameter groups, the alpha -> learning-rate map, composition with schedulers, sharing a Monitor."""

from __future__ import annotations

import pytest

import htsr
from htsr.errors import OptionError

torch = pytest.importorskip("torch")


def _model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.LayerNorm(128), torch.nn.ReLU(),
                            torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 40))
    with torch.no_grad():  # three clearly different spectra
        m[3].weight.mul_(torch.linspace(0.05, 3, 128) ** 2)
    return m


def _train_step(m, opt):
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(x), torch.arange(32) % 40).backward()
    opt.step()


def test_one_group_per_layer_and_norms_follow_their_layer():
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    tb = htsr.TempBalance(opt, m, every=1)
    assert tb.group_layers == ["0", "3", "5"]
    ids = [{id(p) for p in g["params"]} for g in opt.param_groups]
    assert ids[0] == {id(m[0].weight), id(m[0].bias), id(m[1].weight), id(m[1].bias)}  # LayerNorm follows layer 0
    assert ids[1] == {id(m[3].weight), id(m[3].bias)} and ids[2] == {id(m[5].weight), id(m[5].bias)}
    assert all(g["momentum"] == 0.9 and g["lr"] == 0.1 for g in opt.param_groups)


def test_factors_map_alpha_linearly_and_apply_inside_step_only():
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)  # no momentum: the update is exactly -lr * grad
    tb = htsr.TempBalance(opt, m, lr_min_ratio=0.4, lr_slope=2.0, every=1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    assert tb.factors == [1.0, 1.0, 1.0]  # until the first analysis
    _train_step(m, opt)
    sched.step()  # base lr 0.05 now
    record = tb.step(0)
    alphas = {k: v["alpha"] for k, v in record["layers"].items()}
    lo, hi = min(alphas.values()), max(alphas.values())
    assert hi > lo
    for name, row in record["layers"].items():
        assert row["factor"] == pytest.approx(0.4 + 2.0 * (alphas[name] - lo) / (hi - lo), abs=1e-12)
    assert sorted(tb.factors) == pytest.approx([0.4, 0.4 + 2.0 * (sorted(alphas.values())[1] - lo) / (hi - lo), 2.4])
    assert max(alphas, key=alphas.get) == tb.group_layers[tb.factors.index(max(tb.factors))]  # higher alpha, higher lr
    before = [p.detach().clone() for p in m.parameters()]
    _train_step(m, opt)
    assert [g["lr"] for g in opt.param_groups] == [0.05] * 3  # the scheduler still sees the base rate
    for g, f in zip(opt.param_groups, tb.factors, strict=True):
        for p in g["params"]:
            old = before[[id(q) for q in m.parameters()].index(id(p))]
            assert torch.allclose(p.detach() - old, -0.05 * f * p.grad, atol=1e-7)
    assert tb.lrs() == pytest.approx([0.05 * f for f in tb.factors])
    sched.step()
    assert sched.get_last_lr() == pytest.approx([0.025] * 3)


def test_every_sharing_a_monitor_and_history_file(tmp_path):
    m = _model()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    tb = htsr.TempBalance(opt, m, every=2, path=tmp_path / "tb.jsonl")
    assert tb.step(0) is not None and tb.step(1) is None and tb.step(2) is not None
    assert len(tb.history) == 2 and len((tmp_path / "tb.jsonl").read_text().splitlines()) == 2
    mon = htsr.Monitor(every=1, randomize=False)
    m2 = _model()
    opt2 = torch.optim.SGD(m2.parameters(), lr=0.1)
    tb2 = htsr.TempBalance(opt2, m2, monitor=mon)
    assert tb2.step(0) is None  # the monitor has not analyzed yet
    rec = mon.step(m2, 0)
    out = tb2.step(0)
    assert {k: v["alpha"] for k, v in out["layers"].items()} == {k: v["alpha"] for k, v in rec["layers"].items()}
    assert tb2.step(1) is None  # no newer analysis


def test_bad_input():
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    with pytest.raises(OptionError, match="before the learning-rate scheduler"):
        htsr.TempBalance(opt, m)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for kw, match in [({"lr_min_ratio": 0}, "lr_min_ratio"), ({"lr_slope": -1}, "lr_slope"), ({"every": 0}, "every")]:
        with pytest.raises(OptionError, match=match):
            htsr.TempBalance(opt, m, **kw)
    with pytest.raises(OptionError, match="several|analyzed layers"):
        two = torch.optim.SGD([{"params": list(m[0].parameters()) + list(m[3].parameters())},
                               {"params": m[5].parameters()}], lr=0.1)
        htsr.TempBalance(two, m)
    assert len(opt.param_groups) == 1  # refused constructions changed nothing


def test_default_time_budget_skips_analyses_that_would_exceed_it():
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    tb = htsr.TempBalance(opt, m)  # every=None: the Monitor's 5 % budget
    assert tb.monitor.every is None and tb.monitor.max_overhead == 0.05
    assert tb.step(0) is not None  # the first call is analyzed
    assert tb.step(1) is None  # no training time since: analyzing now would exceed 5 %
    assert len(tb.history) == 1
