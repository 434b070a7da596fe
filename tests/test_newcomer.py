"""The newcomer's list (issue 20, item 5): each rough edge a first hour hits, as the user sees it."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

import htsr
from htsr import cli
from htsr.cli import main

st = pytest.importorskip("safetensors.numpy")


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    base = {f"l{i}.weight": rng.standard_normal((64, 32)).astype(np.float32) for i in range(10)}
    ft = dict(base)
    for k in ("l0.weight", "l1.weight"):
        ft[k] = ft[k] + 0.1 * rng.standard_normal((64, 32)).astype(np.float32)
    st.save_file(base, str(tmp_path / "base.safetensors"))
    st.save_file(ft, str(tmp_path / "ft.safetensors"))
    st.save_file({"small.weight": rng.standard_normal((128, 10)).astype(np.float32),
                  "big.weight": rng.standard_normal((128, 40)).astype(np.float32)}, str(tmp_path / "small.safetensors"))
    return tmp_path


def test_dask_without_the_extra_names_it(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    code, out, err = run(["analyze", files / "small.safetensors", "--dask", "local", "-q"])
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'htsr[dask]'" in err and "ModuleNotFoundError" not in err


def test_report_without_matplotlib_says_so(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = files / "r.html"
    code, out, err = run(["analyze", files / "small.safetensors", "--report", page, "-q", "--format", "csv"])
    assert code == 0
    assert f"htsr: wrote {page}" in err and "matplotlib is not installed: the report has no figures" in err
    html = page.read_text(encoding="utf-8")
    assert "No figures:</b> matplotlib is not installed" in html and "data:image/png" not in html


def test_small_sample_rows_are_marked_in_both_and_said_once(files):
    path = str(files / "small.safetensors")
    mine = htsr.analyze(path, progress=False).details.set_index("name")
    ref = htsr.WeightWatcher().analyze(path).set_index("name")
    assert mine.loc["small", "alpha"] != pytest.approx(ref.loc["small", "alpha"], rel=1e-3)  # two estimators
    assert "fewer than 20 eigenvalues (10): alpha from htsr's exhaustive fit" in mine.loc["small", "reason"]
    assert "fewer than 20 eigenvalues (10): alpha from the reference's small-sample estimator" in ref.loc["small", "reason"]
    assert mine.loc["big", "reason"] == "" and ref.loc["big", "reason"] == ""  # 40 eigenvalues: one estimator
    code, out, err = run(["analyze", path, "--format", "table", "-q"])
    assert code == 0 and out.count("fewer than 20 eigenvalues") == 1
    assert "note: 1 layer(s) have fewer than 20 eigenvalues" in out


def test_base_with_unchanged_layers_counts_honestly(files):
    code, out, err = run(["analyze", files / "ft.safetensors", "--base", files / "base.safetensors",
                          "--format", "table", "-q"])
    assert code == 0
    assert "Summary (2 layer(s) analyzed, 8 skipped)" in out
    assert "invalid" not in out and "all entries are zero" not in out
    assert out.count("unchanged from base") == 1  # one line for the eight
    report = htsr.analyze(str(files / "ft.safetensors"), base_model=str(files / "base.safetensors"), progress=False)
    assert list(report.details["name"]) == ["l0", "l1"]
    assert list(report.skipped["reason"]) == ["unchanged from base"] * 8


def test_every_output_file_gets_one_wrote_line(files):
    small = files / "small.safetensors"
    for argv in (["analyze", small, "-q"], ["describe", small], ["compare", small, small]):
        target = files / f"{argv[0]}.json"
        code, out, err = run([*argv, "-o", target])
        assert code == 0 and out == "" and target.is_file()
        assert err.splitlines() == [f"htsr: wrote {target}"]


def test_the_demo_report_is_ignored_by_git():
    ignore = (Path(__file__).parents[1] / ".gitignore").read_text(encoding="utf-8").split()
    assert "/" + cli.DEMO_REPORT in ignore
