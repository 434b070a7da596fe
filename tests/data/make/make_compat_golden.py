"""Write the reference tool's tables for the compat parity suite (``tests/test_compat_golden.py``).

Run with an interpreter that has the reference and the models' framework::

    python -m venv ww-ref && ww-ref/bin/pip install weightwatcher==0.7.7 "powerlaw<2" torch==2.13.0 pandas
    WW_PYTHON=ww-ref/bin/python
    $WW_PYTHON tests/data/make/make_compat_golden.py

(from the repository root; ``… make_compat_golden.py describe`` writes only that part, likewise
``tables`` and ``spread``; torch's CPU wheel is enough). It builds every model of
``tests/data/make/models.py`` with its fixed seed, runs the reference's
``WeightWatcher(model=m).analyze()`` with the default options and with
``pool=False``, and writes

- ``tests/data/compat_ww077_default.csv`` and ``tests/data/compat_ww077_pool_false.csv``:
  the reference's rows, with ``model`` and ``init`` columns in front;
- ``tests/data/compat_ww077_describe.csv``: the reference's ``describe()`` of every model
  (default and ``pool=False``; an ``option`` column tells which);
- ``tests/data/compat_ww077_randomize_spread.csv``: for a few models, the
  smallest and largest ``rand_num_spikes`` the reference gives per row over
  ``SPREAD_RUNS`` runs of ``randomize=True`` (its shuffles come from the global
  ``np.random``, seeded here per run so the file is reproducible).

htsr itself never imports the reference; only this script does.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = HERE.parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402

SPREAD_RUNS = 6
OPTIONS = {"default": {}, "pool_false": {"pool": False}}


def _analyze(model, **kwargs) -> pd.DataFrame:
    import weightwatcher as ww

    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints from its small-sample fit
        return ww.WeightWatcher(model=model).analyze(**kwargs)


def _describe_all() -> None:
    import weightwatcher as ww

    frames = []
    for name in models.BUILDERS:
        model = models.build(name)
        for key, kwargs in OPTIONS.items():
            with contextlib.redirect_stdout(io.StringIO()):
                frame = ww.WeightWatcher(model=model).describe(**kwargs)
            frame.insert(0, "option", key)
            frame.insert(0, "model", name)
            frames.append(frame)
    pd.concat(frames, ignore_index=True).to_csv(DATA / "compat_ww077_describe.csv", index=False, float_format="%.17g")


def main(parts: tuple[str, ...] = ("describe", "tables", "spread")) -> None:
    import weightwatcher as ww

    assert ww.__version__ == "0.7.7", ww.__version__
    if "describe" in parts:
        _describe_all()
    if "tables" in parts:
        _tables()
    if "spread" in parts:
        _spread()


def _tables() -> None:
    tables: dict[str, list[pd.DataFrame]] = {k: [] for k in OPTIONS}
    for name, init in models.CASES:
        model = models.build(name, init)
        for key, kwargs in OPTIONS.items():
            t0 = time.perf_counter()
            details = _analyze(model, **kwargs)
            details.insert(0, "init", init)
            details.insert(0, "model", name)
            tables[key].append(details)
            print(f"{name:20s} {init:8s} {key:10s} {len(details):4d} rows {time.perf_counter() - t0:6.1f} s", flush=True)
    for key, frames in tables.items():
        frame = pd.concat(frames, ignore_index=True)
        frame.to_csv(DATA / f"compat_ww077_{key}.csv", index=False, float_format="%.17g")


def _spread() -> None:
    rows = []
    for name, init in models.SPREAD_CASES:
        model = models.build(name, init)
        runs = []
        for k in range(SPREAD_RUNS):
            np.random.seed(k)
            runs.append(_analyze(model, randomize=True)["rand_num_spikes"].to_numpy())
        base = _analyze(model)
        counts = np.vstack(runs)
        for r in range(len(base)):
            rows.append({"model": name, "init": init, "layer_id": int(base["layer_id"][r]), "name": base["name"][r],
                         "num_evals": int(base["num_evals"][r]), "rand_num_spikes_min": int(counts[:, r].min()),
                         "rand_num_spikes_max": int(counts[:, r].max()), "runs": SPREAD_RUNS})
        print(f"spread {name} {init} done", flush=True)
    pd.DataFrame(rows).to_csv(DATA / "compat_ww077_randomize_spread.csv", index=False)


if __name__ == "__main__":
    # optional arguments pick parts (describe, tables, spread); none: all of them
    main(tuple(sys.argv[1:]) or ("describe", "tables", "spread"))
