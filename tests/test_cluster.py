"""Dask scale-out gives the same table as the in-process engine, bit for bit and in order."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
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


def _csv(args):
    out, err = io.StringIO(), io.StringIO()
    code = main(["analyze", *args, "--format", "csv", "--quiet"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    return out.getvalue()


def test_cli_dask_local_is_bit_identical_to_serial(tmp_path):
    path = str(_files(tmp_path))
    serial = _csv([path, "--randomize", "--mp-fit", "--workers", "1"])
    on_dask = _csv([path, "--randomize", "--mp-fit", "--dask", "local", "--workers", "2"])
    assert on_dask == serial  # same bytes: same numbers, same order
    names = [line.split(",")[1] for line in serial.splitlines()[1:]]
    assert names == ["bad", "layers.0", "layers.1", "layers.2", "layers.3"]


def test_scheduler_address_and_client(tmp_path):
    from distributed import Client, LocalCluster

    path = _files(tmp_path)
    serial = htsr.analyze(path, randomize=True, workers=1).details
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        by_address = htsr.analyze(path, dask=cluster.scheduler_address, randomize=True).details
        with Client(cluster) as client:
            by_client = htsr.analyze(path, dask=client, randomize=True).details
            assert client.status == "running"  # a client passed in is not closed
    pd.testing.assert_frame_equal(serial, by_address, check_exact=True)
    pd.testing.assert_frame_equal(serial, by_client, check_exact=True)
    assert by_address.set_index("name").loc["bad", "status"] == "invalid"


def test_bad_dask_values(tmp_path):
    path = _files(tmp_path)
    with pytest.raises(OptionError, match="'dask' option"):
        htsr.analyze(path, dask="somewhere")
    with pytest.raises(OptionError, match="'dask' option"):
        htsr.analyze(path, dask=3)
    err = io.StringIO()
    assert main(["analyze", str(path), "--dask", "nowhere"], stdout=io.StringIO(), stderr=err) == 2
    assert "'dask' option" in err.getvalue()
