"""Resumable runs: the checkpoint file, resuming after kill -9, refusing another run's checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import htsr
from htsr.checkpoint import decode, encode
from htsr.errors import CheckpointError

SRC = str(Path(htsr.__file__).resolve().parents[1])


def _save(path, seed=0, n=6, rows=120):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    sd = {f"layers.{i}.weight": rng.standard_normal((rows + 7 * i, 50)).astype(np.float32) for i in range(n)}
    save_file(sd, str(path))
    return path


def test_codec_round_trips_layer_results(tmp_path):
    """Every LayerResult of a randomized MP-fit run comes back equal, field by field."""
    path = _save(tmp_path / "m.safetensors", n=2)
    results = htsr.analyze(path, randomize=True, mp_fit=True, detX=True, keep_esd=True).layers
    back = decode(json.loads(json.dumps(encode(results), allow_nan=False)))
    assert [type(r) for r in back] == [type(r) for r in results]
    for a, b in zip(results, back):
        _same(a, b)
    v = {"a": (1, float("nan")), "c": np.float32(0.1), (2, None): np.arange(3.0), "d": None, "e": True}
    w = decode(json.loads(json.dumps(encode(v), allow_nan=False)))
    assert w["a"][0] == 1 and np.isnan(w["a"][1]) and type(w["c"]) is np.float32 and w["c"] == np.float32(0.1)
    assert w[(2, None)].tolist() == [0.0, 1.0, 2.0] and w["d"] is None and w["e"] is True


def _same(a, b, path="result"):
    import dataclasses

    assert type(a) is type(b), path
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, path


def test_decode_refuses_unknown_types():
    with pytest.raises(CheckpointError, match="unknown type"):
        decode({"__dataclass__": "os.system", "fields": {}})
    with pytest.raises(TypeError):
        encode(object())


def test_resume_reads_back_instead_of_computing(tmp_path, monkeypatch):
    path = _save(tmp_path / "m.safetensors")
    ck = tmp_path / "run.jsonl"
    full = htsr.analyze(path, randomize=True, mp_fit=True, keep_esd=True).to_csv()
    first = htsr.analyze(path, randomize=True, mp_fit=True, keep_esd=True, checkpoint=ck)
    assert first.to_csv() == full
    lines = ck.read_bytes().splitlines()
    header = json.loads(lines[0])
    assert header["htsr_checkpoint"] == 1 and "workers" not in header["options"] and len(lines) == 7
    # keep the header and two layers, plus a line torn by a crash
    ck.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][:40])
    from htsr import engine

    computed = []
    real = engine.analyze_plan
    monkeypatch.setattr(engine, "analyze_plan", lambda p, *a, **k: computed.append(p.tensor.name) or real(p, *a, **k))
    again = htsr.analyze(path, randomize=True, mp_fit=True, keep_esd=True, checkpoint=ck, workers=2)
    assert again.to_csv() == full
    assert sorted(computed) == [f"layers.{i}" for i in range(2, 6)]  # layers 0 and 1 came from the file
    assert len(ck.read_bytes().splitlines()) == 7 and ck.read_bytes().endswith(b"\n")
    for a, b in zip(again.layers, first.layers):
        _same(a, b)


def test_refuses_other_options_other_model_and_foreign_files(tmp_path):
    path = _save(tmp_path / "m.safetensors")
    ck = tmp_path / "run.jsonl"
    htsr.analyze(path, checkpoint=ck)
    before = ck.read_bytes()
    with pytest.raises(CheckpointError, match=r"option seed=0 there, 1 now"):
        htsr.analyze(path, checkpoint=ck, seed=1)
    with pytest.raises(CheckpointError, match="option randomize"):
        htsr.analyze(path, checkpoint=ck, randomize=True)
    other = _save(tmp_path / "other.safetensors", seed=1)  # same names and shapes, other weights
    with pytest.raises(CheckpointError, match="another model"):
        htsr.analyze(other, checkpoint=ck)
    assert ck.read_bytes() == before  # never overwritten
    htsr.analyze(path, checkpoint=ck, workers=1, progress=False)  # speed-only options may change
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"hello": 1}\n')
    with pytest.raises(CheckpointError, match="not an htsr checkpoint"):
        htsr.analyze(path, checkpoint=foreign)
    sd = {"fc.weight": np.random.default_rng(0).standard_normal((40, 20))}
    mem = tmp_path / "mem.jsonl"
    htsr.analyze(sd, checkpoint=mem)
    sd["fc.weight"] = sd["fc.weight"] * 2  # in-memory models: the data is hashed
    with pytest.raises(CheckpointError, match="another model"):
        htsr.analyze(sd, checkpoint=mem)


def _cli(model, ck, out):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "htsr", "analyze", str(model), "--randomize", "--mp-fit", "--workers", "1",
           "--quiet", "--format", "csv", "-o", str(out)]
    if ck is not None:
        cmd += ["--checkpoint", str(ck)]
    return cmd, env


def test_kill_9_then_resume_gives_the_same_csv(tmp_path):
    model = _save(tmp_path / "m.safetensors", n=40, rows=300)
    cmd, env = _cli(model, None, tmp_path / "full.csv")
    subprocess.run(cmd, env=env, check=True, timeout=300)
    ck = tmp_path / "run.jsonl"
    cmd, env = _cli(model, ck, tmp_path / "resumed.csv")
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ck.exists() and ck.read_bytes().count(b"\n") >= 3:  # header + two layers
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = ck.read_bytes().count(b"\n") - 1
    assert proc.returncode == -signal.SIGKILL and 2 <= lines < 40, lines  # killed mid-run
    assert not (tmp_path / "resumed.csv").exists()
    subprocess.run(cmd, env=env, check=True, timeout=300)
    assert (tmp_path / "resumed.csv").read_bytes() == (tmp_path / "full.csv").read_bytes()
    names = [json.loads(x)["longname"] for x in ck.read_bytes().splitlines()[1:]]
    assert sorted(names) == sorted(f"layers.{i}" for i in range(40))  # each layer once


def test_every_result_type_is_allowed():
    """Each dataclass a LayerResult can hold (TailFit, VectorColumns …) decodes from a checkpoint."""
    import dataclasses
    import typing

    from htsr import results
    from htsr.checkpoint import _dataclasses

    allowed = set(_dataclasses().values())
    hints = typing.get_type_hints(results.LayerResult)
    for f in dataclasses.fields(results.LayerResult):
        for t in typing.get_args(hints[f.name]) or (hints[f.name],):
            if dataclasses.is_dataclass(t):
                assert t in allowed, t


def test_resume_with_the_tpl_fit(tmp_path):
    path = _save(tmp_path / "m.safetensors", n=3)
    ck = tmp_path / "tpl.jsonl"
    first = htsr.analyze(path, fit="TPL", checkpoint=ck).to_csv()
    assert htsr.analyze(path, fit="TPL", checkpoint=ck).to_csv() == first
