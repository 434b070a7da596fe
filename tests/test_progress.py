"""Progress bars: shown where a person watches (a terminal), silenced by progress=False / --quiet."""

from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest

import htsr
from htsr.cli import main
from htsr.progress import Progress, watching


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _model(n: int = 4):
    rng = np.random.default_rng(0)
    return {f"l{i}.weight": rng.standard_normal((60, 30)) for i in range(n)}


def test_bar_shows_count_rate_and_eta(monkeypatch):
    err = FakeTTY()
    monkeypatch.setattr(sys, "stderr", err)
    bar = Progress(3, None, desc="htsr analyze", unit="layer")
    assert bar.shown
    for name in ("a", "b", "c"):
        bar.update(name)
    bar.close()
    text = err.getvalue()
    assert "htsr analyze" in text and "3/3" in text
    assert re.search(r"\d+:\d\d<\d+:\d\d", text)  # elapsed<remaining
    assert "layer/s" in text or "s/layer" in text


def test_not_shown_when_piped_or_disabled(monkeypatch):
    err = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", err)
    assert not watching()
    bar = Progress(3, None)
    bar.update("a")
    bar.close()
    assert not bar.shown and err.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    assert watching() and not Progress(3, False).shown
    assert Progress(3, True).shown and not Progress(0, True).shown


@pytest.mark.parametrize("progress, shown", [(None, True), (False, False), (True, True)])
def test_analyze_progress_on_a_terminal(monkeypatch, progress, shown):
    err = FakeTTY()
    monkeypatch.setattr(sys, "stderr", err)
    report = htsr.analyze(_model(), progress=progress, workers=1)
    assert len(report.details) == 4
    assert ("4/4" in err.getvalue()) is shown


def test_analyze_progress_forced_into_a_pipe(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    htsr.analyze(_model(), workers=1)
    assert err.getvalue() == ""
    htsr.analyze(_model(), workers=1, progress=True)
    assert "4/4" in err.getvalue()


def test_cli_quiet_and_figures_bar(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "m.npz"
    np.savez(path, **_model(2))
    for quiet in (False, True):
        err = FakeTTY()
        monkeypatch.setattr(sys, "stderr", err)
        out = io.StringIO()
        args = ["analyze", str(path), "--format", "csv", "--plots", str(tmp_path / "figs")] + (["--quiet"] if quiet else [])
        assert main(args, stdout=out, stderr=io.StringIO()) == 0
        assert out.getvalue().count("\n") == 3  # header + 2 rows; no bar in the data
        text = err.getvalue()
        if quiet:
            assert text == ""
        else:
            assert "htsr analyze" in text and "htsr figures" in text and "2/2" in text


def test_a_shown_bar_starts_no_thread(monkeypatch):
    """Figures are drawn in forked processes only while no other thread runs: the bar adds none."""
    import threading

    monkeypatch.setattr(sys, "stderr", FakeTTY())
    before = threading.active_count()
    bar = Progress(5, True)
    bar.update("a")
    assert bar.shown and threading.active_count() == before
    bar.close()


def test_notebook_gets_the_widget_bar(monkeypatch, capsys):
    pytest.importorskip("ipywidgets")
    notebook = pytest.importorskip("tqdm.notebook")
    import htsr.progress as progress

    monkeypatch.setattr(progress, "in_notebook", lambda: True)  # as inside a Jupyter kernel
    bar = Progress(3, None, desc="htsr analyze")
    assert bar.shown and isinstance(bar._bar, notebook.tqdm)
    for name in ("a", "b", "c"):
        bar.update(name)
    assert bar._bar.n == 3
    bar.close()
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    assert progress.notebook_bar() is None  # a terminal keeps the text bar
