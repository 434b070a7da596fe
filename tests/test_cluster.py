"""Dask scale-out gives the same table as the in-process engine, bit for bit and in order."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import htsr
from htsr.cli import main
from htsr.errors import OptionError

pytest.importorskip("distributed")


def _files(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    sd = {f"layers.{i}.weight": rng.standard_normal((90 + 10 * i, 40)).astype(np.float32) for i in range(4)}
    sd["bad.weight"] = np.full((30, 30), np.nan, dtype=np.float32)
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))
    return path


# Dask leaves threads behind in the process that used it (its event loop, comm and offload threads);
# with other threads alive htsr draws figures in-process. The clusters therefore run in subprocesses.
SRC = str(Path(htsr.__file__).resolve().parents[1])


def _run(code_or_args, *, script: bool = False) -> str:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-c", code_or_args] if script else [sys.executable, "-m", "htsr", *code_or_args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _csv(args):
    return _run(["analyze", *args, "--format", "csv", "--quiet"])


def test_cli_dask_local_is_bit_identical_to_serial(tmp_path):
    path = str(_files(tmp_path))
    serial = _csv([path, "--randomize", "--mp-fit", "--workers", "1"])
    on_dask = _csv([path, "--randomize", "--mp-fit", "--dask", "local", "--workers", "2"])
    assert on_dask == serial  # same bytes: same numbers, same order
    names = [line.split(",")[1] for line in serial.splitlines()[1:]]
    assert names == ["bad", "layers.0", "layers.1", "layers.2", "layers.3"]


SCRIPT = """
import sys, htsr
from distributed import Client, LocalCluster
path = sys.argv[1]
serial = htsr.analyze(path, randomize=True, workers=1).to_csv()
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
    by_address = htsr.analyze(path, dask=cluster.scheduler_address, randomize=True).to_csv()
    with Client(cluster) as client:
        by_client = htsr.analyze(path, dask=client, randomize=True).to_csv()
        assert client.status == "running"  # a client passed in is not closed
print(serial == by_address, serial == by_client, "invalid" in serial)
"""


def test_scheduler_address_and_client(tmp_path):
    path = _files(tmp_path)
    out = _run(SCRIPT.replace("sys.argv[1]", repr(str(path))), script=True)
    assert out.split() == ["True", "True", "True"]  # both bit-identical to serial; the NaN layer reported


def test_bad_dask_values(tmp_path):
    path = _files(tmp_path)
    with pytest.raises(OptionError, match="'dask' option"):
        htsr.analyze(path, dask="somewhere")
    with pytest.raises(OptionError, match="'dask' option"):
        htsr.analyze(path, dask=3)
    err = io.StringIO()
    assert main(["analyze", str(path), "--dask", "nowhere"], stdout=io.StringIO(), stderr=err) == 2
    assert "'dask' option" in err.getvalue()
