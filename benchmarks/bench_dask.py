"""Matrices per second: serial (one thread) against a Dask LocalCluster of 2 worker processes.

Usage::

    python benchmarks/bench_dask.py [DIR] [--count 24] [--size 1024]

writes ``count`` float32 matrices of ``size``×``size`` (Gaussian, fixed seed) into
``DIR/bench.safetensors`` (a temporary folder by default), then times, in this order,

* ``htsr.analyze(path, workers=1)`` — the serial baseline;
* ``htsr.analyze(path, dask=ADDRESS)`` on an already running ``LocalCluster(n_workers=2,
  threads_per_worker=1)`` — the steady state of a cluster started by hand;
* ``htsr.analyze(path, dask="local", workers=2)`` — the same, cluster start-up included;

checks the three tables are bit-identical, and prints matrices per second and the
load average (the machine may be shared).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make(folder: Path, count: int, size: int) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    path = folder / "bench.safetensors"
    save_file({f"layers.{i}.weight": rng.standard_normal((size, size), dtype=np.float32) for i in range(count)},
              str(path))
    return path


def main(argv: list[str]) -> None:
    import pandas as pd
    from distributed import LocalCluster

    import htsr

    count = int(argv[argv.index("--count") + 1]) if "--count" in argv else 24
    size = int(argv[argv.index("--size") + 1]) if "--size" in argv else 1024
    args = [a for i, a in enumerate(argv) if not a.startswith("--") and (i == 0 or not argv[i - 1].startswith("--"))]
    folder = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="htsr-dask-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = make(folder, count, size)
    opts = {"progress": False}

    t = time.perf_counter()
    serial = htsr.analyze(path, workers=1, **opts).details
    t_serial = time.perf_counter() - t

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        htsr.analyze(path, dask=cluster.scheduler_address, layers=[1], **opts)  # warm the workers' imports
        t = time.perf_counter()
        warm = htsr.analyze(path, dask=cluster.scheduler_address, **opts).details
        t_warm = time.perf_counter() - t

    t = time.perf_counter()
    cold = htsr.analyze(path, dask="local", workers=2, **opts).details
    t_cold = time.perf_counter() - t

    pd.testing.assert_frame_equal(serial, warm, check_exact=True)
    pd.testing.assert_frame_equal(serial, cold, check_exact=True)
    print(f"{count} matrices {size}x{size} float32, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"serial (workers=1):            {t_serial:7.2f} s  {count / t_serial:6.2f} matrices/s")
    print(f"Dask, 2 running workers:       {t_warm:7.2f} s  {count / t_warm:6.2f} matrices/s  "
          f"({t_serial / t_warm:.2f}x)")
    print(f"Dask 'local', start included:  {t_cold:7.2f} s  {count / t_cold:6.2f} matrices/s  "
          f"({t_serial / t_cold:.2f}x)")
    print("tables bit-identical: yes")


if __name__ == "__main__":
    main(sys.argv[1:])
