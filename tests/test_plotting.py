"""Per-layer figures: the kinds drawn, what they show, where files go, and no global matplotlib state."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types

import numpy as np
import pytest

import htsr
from htsr import plotting

pytest.importorskip("matplotlib")

FIVE = ("esd", "esd2", "esd3", "esd4", "esd5")


def _model(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"fc1.weight": rng.standard_normal((300, 100)), "fc2.weight": rng.standard_normal((200, 80)) + 0.3}


def _png_ok(data: bytes) -> tuple[int, int]:
    import io

    import matplotlib.image as mpimg

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas
    return img.shape[:2]


def _lines(fig):
    return [ln for ax in fig.axes for ln in ax.get_lines()]


def test_savefig_writes_the_five_figures_per_layer(tmp_path):
    out = tmp_path / "figs"
    report = htsr.analyze(_model(), savefig=str(out))
    files = sorted(p.name for p in out.iterdir())
    expected = sorted(f"layer{i}.{n}.{k}.png" for i, n in ((1, "fc1"), (2, "fc2")) for k in FIVE)
    assert files == expected
    for p in out.iterdir():
        _png_ok(p.read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs"]
    assert all(r.esd is not None and r.fit.xmins.size for r in report.layers) and len(report.layers) == 2


def test_loglog_figure_draws_the_fitted_power_law_and_xmin(rng):
    W = rng.standard_t(3, (400, 200))
    report = htsr.analyze({"t.weight": W}, keep_esd=True)
    row = report.details.iloc[0]
    figs = dict(plotting.layer_figures(report.layer(1)))
    assert set(figs) == set(FIVE)
    lines = _lines(figs["esd"])
    fit = next(ln for ln in lines if ln.get_linestyle() == "--")
    x, y = np.asarray(fit.get_xdata()), np.asarray(fit.get_ydata())
    slope = np.diff(np.log(y)) / np.diff(np.log(x))
    np.testing.assert_allclose(slope, -row["alpha"], rtol=1e-9)
    assert x[0] == pytest.approx(row["xmin"]) and x[-1] == pytest.approx(row["xmax"])
    vertical = [ln for ln in lines if len(set(np.atleast_1d(ln.get_xdata()))) == 1]
    assert any(ln.get_xdata()[0] == pytest.approx(row["xmin"]) for ln in vertical)
    ax = figs["esd"].axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert f"α = {row['alpha']:.3f}" in ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    assert ax.get_legend() is not None
    # esd3: log10 axis with xmin and xmax lines
    xs = sorted(ln.get_xdata()[0] for ln in _lines(figs["esd3"]))
    np.testing.assert_allclose(xs, np.log10([row["xmin"], row["xmax"]]))
    # esd4 / esd5: the whole xmin search, minimum of D at the chosen xmin
    fitobj = report.layer(1).fit
    d_line = _lines(figs["esd4"])[0]
    np.testing.assert_array_equal(d_line.get_xdata(), fitobj.xmins)
    assert fitobj.xmins[np.argmin(d_line.get_ydata())] == pytest.approx(row["xmin"])
    a_line = _lines(figs["esd5"])[0]
    assert a_line.get_ydata()[np.argmin(d_line.get_ydata())] == pytest.approx(row["alpha"])
    for fig in figs.values():
        ax = fig.axes[0]
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
        _png_ok(plotting.figure_png(fig))
        assert fig.axes == []  # released after rendering


def _trap_report(seed: int = 0):
    """A report whose randomized overlay is known: a planted element makes one randomized spike."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((256, 256)) / 16
    W[10, 20] = 10.0
    return htsr.analyze({"trap.weight": W, "clean.weight": rng.standard_normal((256, 128)) / 16},
                        randomize=True, mp_fit=True, keep_esd=True, seed=seed)


def test_randomize_and_mpfit_figures(tmp_path):
    report = _trap_report()
    trap = report.details.set_index("name").loc["trap"]
    assert trap["status"] == "success", trap["reason"]
    key = (int(trap["layer_id"]), None)
    figs = dict(plotting.layer_figures(report.layer(*key)))
    assert set(figs) == set(FIVE) | {"randesd", "mpfit"}
    rand = np.asarray(report.layer(*key).randomized.evals)
    overlay = figs["randesd"].axes[0]
    orange = [ln for ln in overlay.get_lines() if ln.get_color() == "orange"]
    assert len(orange) == 1 and orange[0].get_xdata()[0] == pytest.approx(np.log10(rand.max()))
    colours = {tuple(np.round(p.get_facecolor()[:3], 3)) for p in overlay.patches}
    assert (0.0, 0.502, 0.0) in colours and (1.0, 0.0, 0.0) in colours  # green original, red randomized
    labels = [t.get_text() for t in overlay.get_legend().get_texts()]
    assert labels[:2] == ["original", "randomized"]
    mp = figs["mpfit"].axes[0]
    row = report.details.set_index("layer_id").loc[key[0]]
    assert any(ln.get_color() == "orange" and ln.get_xdata()[0] == pytest.approx(row["bulk_max"])
               for ln in mp.get_lines())
    red = next(ln for ln in mp.get_lines() if ln.get_color() == "red")
    assert np.all(np.asarray(red.get_ydata())[np.asarray(red.get_xdata()) > row["bulk_max"] * 1.0001] == 0)
    written = plotting.plot_report(report, savedir=tmp_path)
    assert len(written) == 14 and all(p.parent == tmp_path for p in written)


def test_overlay_from_a_result_built_by_hand():
    from htsr.spectral.randomize import RandomizedESD
    from htsr.spectral.traps import Trap, TrapSearch

    report = htsr.analyze(_model(), keep_esd=True)
    rand = np.linspace(1.0, 50.0, 100)
    randomized = RandomizedESD(evals=rand, first=rand, slice_evals=(rand,), max_eval=50.0, distance=0.1,
                               softrank=0.5, maxdist=1.0, fit=None, replicas=1)
    traps = TrapSearch(num_traps=1, mean_spike=False, mean_eval=float("nan"),
                       traps=(Trap(None, 50.0, ((1, 2, 3.0),), (2.0,)),), spikes_per_slice=(1,))
    hand = dataclasses.replace(report.layer(1), randomized=randomized, traps=traps)
    figs = dict(plotting.layer_figures(hand))
    assert "randesd" in figs and "mpfit" not in figs
    assert "correlation traps: 1" in figs["randesd"].axes[0].get_title()
    _png_ok(plotting.figure_png(figs["randesd"]))
    assert list(plotting.layer_figures(report.layer(2), kinds=("randesd",))) == []


def test_mp_density_is_a_probability_density():
    from scipy.integrate import quad

    from htsr.spectral.marchenko_pastur import mp_density

    for Q, sigma in ((1.0, 1.0), (2.5, 1.0), (4.0, 0.7)):
        lp, lm = sigma ** 2 * (1 + Q ** -0.5) ** 2, sigma ** 2 * (1 - Q ** -0.5) ** 2
        f = lambda x: float(mp_density(np.array([x]), Q, sigma)[0])  # noqa: E731
        assert quad(f, lm, lp, limit=200)[0] == pytest.approx(1.0, abs=2e-3)
        assert quad(lambda x: x * f(x), lm, lp, limit=200)[0] == pytest.approx(sigma ** 2, abs=2e-3)
    # a large random matrix's rescaled eigenvalues follow it
    rng = np.random.default_rng(0)
    N, M = 2000, 500
    X = rng.standard_normal((N, M))
    ev = np.linalg.eigvalsh(X.T @ X / N)
    hist, edges = np.histogram(ev, bins=30, density=True)
    mids = (edges[1:] + edges[:-1]) / 2
    np.testing.assert_allclose(hist, mp_density(mids, N / M, 1.0), atol=0.08)


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "..", "a/../../b", "C:\\evil\\x", "$x$y_{z}", "",
                                  "\x00nul"])
def test_file_names_stay_inside_the_folder(tmp_path, name):
    fname = plotting.safe_filename(7, name, None, "esd")
    assert "/" not in fname and "\\" not in fname and ".." not in fname and "\x00" not in fname
    assert fname.startswith("layer7.") and fname.endswith(".esd.png")
    target = (tmp_path / fname).resolve()
    assert target.parent == tmp_path.resolve()


def test_hostile_layer_names_write_only_inside_dir(tmp_path):
    rng = np.random.default_rng(1)
    model = {"../../x.weight": rng.standard_normal((60, 30)), "/abs/$y$.weight": rng.standard_normal((60, 30))}
    out = tmp_path / "a" / "figs"
    htsr.analyze(model, savefig=str(out))
    all_files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert len(all_files) == 10 and all(f.startswith("a/figs/layer") for f in all_files)


def test_failed_fit_still_plots(tmp_path):
    model = {"ones.weight": np.ones((40, 20)), "ok.weight": np.random.default_rng(2).standard_normal((60, 30))}
    report = htsr.analyze(model, keep_esd=True)
    row = report.details.set_index("name").loc["ones"]
    assert row["status"] == "failed"
    figs = dict(plotting.layer_figures(report.layer(int(row["layer_id"]))))
    assert "power-law fit failed" in figs["esd"].axes[0].get_title()
    for fig in figs.values():
        _png_ok(plotting.figure_png(fig))


def test_plot_true_shows_inline_in_a_notebook_and_saves_nothing(monkeypatch, tmp_path):
    shown = []
    display_mod = types.ModuleType("IPython.display")
    display_mod.Image = lambda data: ("image", data)
    display_mod.display = shown.append
    ipython = types.ModuleType("IPython")
    ipython.display = display_mod
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)
    monkeypatch.setattr(plotting, "_in_notebook", lambda: True)
    monkeypatch.chdir(tmp_path)
    htsr.analyze(_model(), plot=True)
    assert len(shown) == 10 and all(kind == "image" and data[:4] == b"\x89PNG" for kind, data in shown)
    assert list(tmp_path.iterdir()) == []


def test_plot_outside_a_notebook_shows_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = htsr.analyze(_model(), plot=True)
    assert list(tmp_path.iterdir()) == [] and len(report.layers) == 2


def test_compat_plot_saves_into_ww_img(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    htsr.WeightWatcher(model=_model()).analyze(plot=True)
    assert sorted(p.name for p in (tmp_path / "ww-img").iterdir())[:5] == sorted(f"layer1.fc1.{k}.png" for k in FIVE)
    assert len(list((tmp_path / "ww-img").iterdir())) == 10


def test_no_global_matplotlib_state_is_changed(tmp_path):
    code = f"""
import sys, numpy as np, htsr, matplotlib
before = matplotlib.rcParams.copy()
backend = matplotlib.rcParams._get_backend_or_none()
rng = np.random.default_rng(0)
htsr.analyze({{"fc.weight": rng.standard_normal((80, 40))}}, savefig={str(tmp_path)!r})
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
assert matplotlib.rcParams._get_backend_or_none() == backend
after = matplotlib.rcParams.copy()
changed = [k for k in before if k != "backend" and before[k] != after[k]]
assert not changed, changed
print("ok", len(list(__import__("pathlib").Path({str(tmp_path)!r}).iterdir())))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "5"]


def test_plotting_module_is_not_imported_by_htsr():
    proc = subprocess.run([sys.executable, "-c", "import sys, htsr; print('matplotlib' in sys.modules, "
                           "'htsr.plotting' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"]


def test_unpooled_conv_slices_get_their_own_files(tmp_path):
    rng = np.random.default_rng(6)
    report = htsr.analyze({"conv.weight": rng.standard_normal((40, 16, 2, 2))}, pool=False, savefig=str(tmp_path))
    assert report.details["slice_id"].tolist() == [0, 1, 2, 3]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"layer1.s{s}.conv.{k}.png" for s in range(4) for k in FIVE)
    html = report.to_html()
    assert html.count("<details>") == 4 and "layer 1 slice 3: conv" in html


def test_without_matplotlib_plotting_fails_clearly(monkeypatch, tmp_path):
    report = htsr.analyze(_model(), keep_esd=True)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(htsr.HtsrError, match=r"pip install 'htsr\[plot\]'"):
        plotting.plot_report(report, savedir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_parallel_drawing_gives_the_same_pictures_as_serial(monkeypatch):
    """Forked workers reuse one figure per kind; the PNGs equal those drawn one by one in-process."""
    rng = np.random.default_rng(11)
    model = {f"l{k}.weight": rng.standard_t(4, (120, 60)) for k in range(plotting.PARALLEL_MIN_LAYERS)}
    report = htsr.analyze(model, randomize=True, keep_esd=True)
    if plotting._parallel_workers(len(report.layers)) == 0:
        pytest.skip("drawing in worker processes needs Linux, several cores and no other non-daemon thread")
    parallel = plotting.render_pngs(report)
    monkeypatch.setattr(plotting, "_parallel_workers", lambda n: 0)
    serial = plotting.render_pngs(dataclasses.replace(report, pngs={}))
    assert list(parallel) == list(serial) == [r.key for r in report.layers]
    for key in serial:
        assert [k for k, _ in parallel[key]] == [k for k, _ in serial[key]] == [*FIVE, "randesd"]
        assert [p for _, p in parallel[key]] == [p for _, p in serial[key]]
    # the HTML report reuses the drawn figures: nothing is drawn again
    monkeypatch.setattr(plotting, "_layer_pngs", lambda *a: pytest.fail("drawn twice"))
    html = report.to_html()
    assert html.count("<img") == len(report.layers) + report.traps["layer_id"].nunique()  # ESDs + trap overlays


def test_palette_png_is_small_and_keeps_the_colours():
    import io

    from PIL import Image

    report = _trap_report()
    (kind, png), = [(k, p) for k, p in plotting.render_pngs(report, kinds=("randesd",))[report.layer(1).key]]
    img = Image.open(io.BytesIO(png))
    assert kind == "randesd" and img.mode == "P" and len(png) < 25_000
    colours = {c for _, c in img.convert("RGB").getcolors(maxcolors=256)}
    assert (255, 165, 0) in colours  # the orange line at the largest randomized eigenvalue


def test_figures_drawn_during_the_analysis_equal_those_drawn_after(monkeypatch, tmp_path):
    """analyze(savefig=…) draws each layer's own figures while the analysis runs and the randesd ones
    (their titles name outlier dimensions shared across layers) at the end: the same files, bytes and
    order as drawing everything after the analysis."""
    rng = np.random.default_rng(5)
    model = {}
    for k in range(plotting.PARALLEL_MIN_LAYERS + 1):
        W = rng.standard_normal((200, 100)) / 16
        W[10, 20] = 8.0  # one outlier dimension shared by every layer
        model[f"l{k}.weight"] = W
    if plotting._parallel_workers(len(model)) == 0:
        pytest.skip("drawing in worker processes needs Linux, several cores and no other non-daemon thread")
    added = []
    real_add = plotting.EarlyFigures.add
    monkeypatch.setattr(plotting.EarlyFigures, "add", lambda self, rs: added.extend(rs) or real_add(self, rs))
    opts = dict(randomize=True, mp_fit=True, progress=False)
    report = htsr.analyze(model, savefig=str(tmp_path / "early"), **opts)
    assert len(added) == len(report.layers)
    notes = [plotting.trap_note(report, r.key) for r in report.layers]
    assert any("outlier dimension" in n for n in notes)
    fresh = dataclasses.replace(report, pngs={})
    after = plotting.plot_report(fresh, savedir=tmp_path / "after")
    early = sorted((tmp_path / "early").iterdir())
    assert [p.name for p in early] == sorted(p.name for p in after)
    assert len(early) == len(report.layers) * 7  # five, randesd, mpfit
    for a, b in zip(early, sorted(after)):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert list(report.pngs) == list(fresh.pngs)  # layer by layer, kinds in the same order


def test_reused_axes_draw_the_pictures_of_new_figures():
    """Drawing in bulk reuses one emptied axes per kind (``figures.new_axes``); every PNG equals the one a new
    figure gives: log and linear axes, failed and good fits, the MP fit, the randomized overlay with its note."""
    from htsr.figures import reuse

    rng = np.random.default_rng(3)
    model = {f"l{k}.weight": rng.standard_t(3, (300, 100 + 20 * k)) / 16 for k in range(5)}
    model["tiny.weight"] = rng.standard_normal((30, 12))  # too few eigenvalues for a power-law fit
    report = htsr.analyze(model, randomize=True, mp_fit=True, keep_esd=True, plot=True)

    def draw(on: bool) -> list:
        reuse(on)
        try:
            return [(r.key, kind, plotting.figure_png(fig))
                    for r in report.layers for kind, fig in plotting.layer_figures(r, "outlier dimension 3")]
        finally:
            reuse(False)

    new, reused = draw(False), draw(True)
    assert {kind for _, kind, _ in new} == {*FIVE, "randesd", "mpfit"}
    assert [(k, kind) for k, kind, _ in new] == [(k, kind) for k, kind, _ in reused]
    for (key, kind, a), (_, _, b) in zip(new, reused):
        assert a == b, (key, kind)
