"""Dask scale-out gives the same table as the in-process engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import htsr

pytest.importorskip("distributed")


def _files(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    sd = {f"layers.{i}.weight": rng.standard_normal((90 + 10 * i, 40)).astype(np.float32) for i in range(4)}
    sd["bad.weight"] = np.full((30, 30), np.nan, dtype=np.float32)
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))
    return path


def test_embedded_cluster_matches_local(tmp_path):
    path = _files(tmp_path)
    local = htsr.analyze(path).details
    on_dask = htsr.analyze(path, dask=True).details
    pd.testing.assert_frame_equal(local, on_dask)
    assert on_dask.set_index("name").loc["bad", "status"] == "invalid"


def test_process_workers_read_the_file_themselves(tmp_path):
    from distributed import Client, LocalCluster

    path = _files(tmp_path)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        on_dask = htsr.analyze(path, dask=client, randomize=False).details
    pd.testing.assert_frame_equal(htsr.analyze(path).details, on_dask)
