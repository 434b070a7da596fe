"""The seed document's call on the seed's model: ``WeightWatcher(model=vgg19_bn).analyze(plot=True, randomize=True)``.

Usage (the interpreter needs torchvision besides htsr; see benchmarks/README.md)::

    $WW_PYTHON benchmarks/bench_seed.py [--repeat 2] [--no-reference] [--no-plot-split]

The model is torchvision's ``vgg19_bn`` architecture (``weights=None``,
``torch.manual_seed(0)``) with every ≥ 2-D weight replaced by Student-t (ν = 3)
samples from ``numpy.random.default_rng(0)`` (one generator, parameters in
order), scaled to the tensor's standard deviation: heavy tails, as trained
convnets have, so the randomized ESDs carry many spikes. Printed side by side
in one run:

* the reference (weightwatcher 0.7.7, in ``$WW_PYTHON``, its own process; one run);
* htsr's compat ``WeightWatcher(model).analyze(plot=True, randomize=True)`` (figures under Agg,
  written to a scratch folder), best of ``--repeat``; also without ``plot`` and without
  ``randomize`` for the split;
* the floor: float64 Gram + ``eigvalsh`` of every analyzed matrix (each 3×3 conv slice) plus one
  float32 shuffle, Gram and ``eigvalsh`` of each (as the reference randomizes), the matrices
  already in memory, both cores (the faster of serial threaded BLAS and two single-BLAS threads);
  figures are outside the floor (``FLOOR_SERIAL=0``: only the two threads).

Wall seconds and CPU seconds (user + sys of the process) are both printed: on a shared machine
the CPU seconds are the steadier comparison.

Alphas of htsr and the reference are compared row by row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import banner, best_of, run_reference  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")


def build_model(seed: int = 0):
    """torchvision's vgg19_bn with heavy-tailed (Student-t ν=3) weights, seeded."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.vgg19_bn(weights=None).eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim < 2:
                continue
            t = rng.standard_t(3, size=tuple(p.shape))
            p.copy_(torch.from_numpy((t * (float(p.std()) / t.std())).astype(np.float32)))
    return model


REF_SCRIPT = r"""
import contextlib, io, json, os, sys, tempfile, time, logging
os.environ["MPLBACKEND"] = "Agg"
logging.disable(logging.WARNING)
sys.path.insert(0, sys.argv[1])
import bench_seed
import weightwatcher as ww
model = bench_seed.build_model(int(sys.argv[2]))
import resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
    t, c = time.perf_counter(), cpu()
    df = ww.WeightWatcher(model=model).analyze(plot=True, randomize=True, savefig=d)
    wall, c = time.perf_counter() - t, cpu() - c
print(json.dumps({"best": wall, "cpu": c, "alpha": [float(a) for a in df["alpha"]],
                  "rand_num_spikes": [int(a) for a in df["rand_num_spikes"]]}))
"""


def floor_stacks(model) -> list[np.ndarray]:
    """The analyzed matrices (conv slices as stacks), float64, as htsr's compat plan picks them."""
    from htsr import engine
    from htsr.compat.treatment import REFERENCE, reference_conv2d_factor
    from htsr.config import AnalysisConfig
    from htsr.matrices import slices
    from htsr.sources import open_source

    source = open_source(model, extra_rows=False)
    config = AnalysisConfig(min_evals=REFERENCE.min_evals)
    out = []
    for p in engine.plan(source, config, REFERENCE):
        if p.reason:
            continue
        W = np.asarray(p.tensor.load(), dtype=np.float64)
        out.append(np.ascontiguousarray(slices(W, p.tensor.layer_type, config.conv2d_norm,
                                               reference_conv2d_factor(p.geometry.rf, True))))
    return out


def floor_time(stacks: list[np.ndarray], repeat: int):
    """Best of serial (threaded BLAS) and two threads (one BLAS thread each): the floor's arithmetic."""
    from threadpoolctl import threadpool_limits

    from htsr.spectral.esd import gram

    def one(stack: np.ndarray) -> None:
        np.linalg.eigvalsh(gram(stack))  # float64 Gram + eigvalsh of each slice
        rng = np.random.default_rng(0)
        flat = stack.reshape(stack.shape[0], -1).astype(np.float32)
        shuffled = rng.permuted(flat, axis=1).reshape(stack.shape)  # one float32 shuffle per slice
        np.linalg.eigvalsh(gram(shuffled))

    order = sorted(stacks, key=lambda s: -s.size)

    def serial() -> None:
        for s in order:
            one(s)

    def two() -> None:
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(2) as ex:
            list(ex.map(one, order))

    b = best_of(two, repeat, warmup=0)
    if os.environ.get("FLOOR_SERIAL", "1") == "0":
        return b
    a = best_of(serial, repeat, warmup=0)
    return a if a.wall <= b.wall else b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--no-plot-split", action="store_true", help="skip the htsr runs without plot / randomize")
    args = ap.parse_args()

    import htsr

    banner("the seed's call on vgg19_bn, heavy-tailed weights")
    model = build_model(args.seed)
    with tempfile.TemporaryDirectory() as d:
        def seed_call():
            return htsr.WeightWatcher(model=model).analyze(plot=True, randomize=True, savefig=d)

        ours = best_of(seed_call, args.repeat, warmup=0)
        details = seed_call() if not args.no_reference else None
    print(f"# htsr seed call: {ours}; load {os.getloadavg()[0]:.2f}", flush=True)
    split = {}
    if not args.no_plot_split:
        split["randomize=True (no figures)"] = best_of(
            lambda: htsr.WeightWatcher(model=model).analyze(randomize=True), args.repeat, warmup=0)
        split["default (no figures, no randomize)"] = best_of(
            lambda: htsr.WeightWatcher(model=model).analyze(), args.repeat, warmup=0)
        for k, v in split.items():
            print(f"# htsr {k}: {v}; load {os.getloadavg()[0]:.2f}", flush=True)
    stacks = floor_stacks(model)
    floor = floor_time(stacks, args.repeat)
    print(f"# floor ({sum(s.shape[0] for s in stacks)} matrices in {len(stacks)} layers): {floor}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)

    ref = {} if args.no_reference else run_reference(REF_SCRIPT, [str(Path(__file__).parent), str(args.seed)])
    if "skipped" in ref:
        print("#", ref["skipped"])
    print(f"# reference: {ref.get('best')} s wall, {ref.get('cpu')} CPU-s; load {os.getloadavg()[0]:.2f}", flush=True)
    r, rc = ref.get("best"), ref.get("cpu")
    print("| workload | reference | htsr | speed-up | floor | htsr/floor | htsr cores |")
    print("|---|---|---|---|---|---|---|")
    print(f"| vgg19_bn (Student-t), `analyze(plot=True, randomize=True)`, wall | {f'{r:.1f} s' if r else '—'} | "
          f"{ours.wall:.1f} s | {f'{r / ours.wall:.1f}×' if r else '—'} | {floor.wall:.1f} s | "
          f"{ours.wall / floor.wall:.2f} | {ours.cpu_util:.2f} |")
    ocpu, fcpu = ours.wall * ours.cpu_util, floor.wall * floor.cpu_util
    print(f"| same, CPU seconds (user+sys) | {f'{rc:.1f} s' if rc else '—'} | {ocpu:.1f} s | "
          f"{f'{rc / ocpu:.1f}×' if rc else '—'} | {fcpu:.1f} s | {ocpu / fcpu:.2f} | |")
    for k, v in split.items():
        print(f"| htsr {k}, wall (CPU) | | {v.wall:.1f} s ({v.wall * v.cpu_util:.1f} s) | | | "
              f"{v.wall / floor.wall:.2f} ({v.wall * v.cpu_util / fcpu:.2f}) | {v.cpu_util:.2f} |")
    if details is not None and ref.get("alpha"):
        a = np.asarray(details["alpha"], dtype=float)
        b = np.asarray(ref["alpha"], dtype=float)
        if a.shape == b.shape:
            ok = np.isfinite(a) & np.isfinite(b)
            rel = float(np.max(np.abs(a[ok] - b[ok]) / np.abs(b[ok]))) if ok.any() else math.nan
            print(f"# alphas: {int(ok.sum())}/{a.size} rows compared, max relative difference {rel:.2e}")
        else:
            print(f"# alphas: row counts differ (htsr {a.size}, reference {b.size})")
        print("# rand_num_spikes htsr:", json.dumps([int(x) for x in details["rand_num_spikes"]]))
        print("# rand_num_spikes ref: ", json.dumps(ref["rand_num_spikes"]))


if __name__ == "__main__":
    main()
