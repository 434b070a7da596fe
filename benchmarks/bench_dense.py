"""Twelve square dense layers (six Gaussian, six Student-t entries): htsr, the reference, the floor, the SVD's alphas.

Usage::

    python benchmarks/bench_dense.py [--size 4096] [--layers 12] [--no-reference] [--svd-check]

The layers are written once to a temporary safetensors file (float32, seeded);
htsr reads that file, the reference (in its own interpreter) loads the same
weights into ``torch.nn.Linear`` layers. The floor is float64 Gram + ``eigvalsh``
alone on the same matrices with both cores. Alphas are compared with the
float64 SVD's: the reference's (it uses the SVD), or with ``--svd-check`` our
own ``numpy.linalg.svd`` (slow: ~10 s per 4096² matrix).
At ``--size 4096`` the reference takes about two minutes on 2 cores; use
``--size 1024`` for a quick run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import HEADER, banner, best_of, row, run_reference  # noqa: E402

REF_SCRIPT = r"""
import json, sys, time, logging
logging.disable(logging.WARNING)
import numpy as np, torch
from safetensors.numpy import load_file
import weightwatcher as ww
sd = load_file(sys.argv[1])
layers = []
for k in sorted(sd, key=lambda k: int(k.split(".")[1])):
    w = torch.from_numpy(sd[k])
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    layers.append(lin)
model = torch.nn.Sequential(*layers)
t = time.perf_counter()
df = ww.WeightWatcher(model=model).analyze()
wall = time.perf_counter() - t
print(json.dumps({"best": wall, "runs": [wall], "alpha": df["alpha"].tolist()}))
"""


def make_layers(size: int, count: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    sd = {}
    for i in range(count):
        if i < count // 2:
            w = rng.standard_normal((size, size), dtype=np.float32)
        else:
            w = rng.standard_t(3.0, (size, size)).astype(np.float32)
        sd[f"layer.{i}.weight"] = w / np.float32(np.sqrt(size))
    return sd


def floor_time(mats: list[np.ndarray]):
    """Float64 Gram + eigvalsh with both cores (two threads, one BLAS thread each), one run."""
    from threadpoolctl import threadpool_limits

    def one(m: np.ndarray) -> None:
        w = m.astype(np.float64)
        np.linalg.eigvalsh(w.T @ w)

    def two() -> None:
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(2) as ex:
            list(ex.map(one, mats))

    return best_of(two, repeat=1, warmup=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--svd-check", action="store_true", help="compare alphas with our own float64 SVD")
    ap.add_argument("--fast", action="store_true", help="also time fast=True")
    args = ap.parse_args()

    import htsr
    from safetensors.numpy import save_file

    banner(f"{args.layers} dense {args.size}x{args.size} layers")
    sd = make_layers(args.size, args.layers)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dense.safetensors"
        save_file(sd, str(path))
        ref = {} if args.no_reference else run_reference(REF_SCRIPT, [str(path)])
        if "skipped" in ref:
            print("#", ref["skipped"])
        elif ref:
            print(f"# reference: {ref['best']:.2f} s")
        mats = list(sd.values())
        htsr.analyze({"warm.weight": np.random.default_rng(1).standard_normal((64, 32))})  # imports, not timed
        floor = floor_time(mats)
        print(f"# floor (float64 Gram + eigvalsh, 2 threads): {floor}")
        reports = []
        ours = best_of(lambda: reports.append(htsr.analyze(path, device="cpu")), repeat=1, warmup=0)
        report = reports[0]
        print(f"# htsr analyze: {ours}")
        alpha = report.details["alpha"].to_numpy()
        svd_alpha = None
        if ref.get("alpha"):
            svd_alpha = np.asarray(ref["alpha"], dtype=float)
            source = "reference (float64 SVD)"
        elif args.svd_check:
            from htsr.spectral.powerlaw import fit_powerlaw

            svd_alpha = np.array([fit_powerlaw(np.linalg.svd(m.astype(np.float64), compute_uv=False) ** 2).alpha
                                  for m in mats])
            source = "numpy float64 SVD"
        note = f"cpu {ours.cpu_util:.2f} cores"
        if svd_alpha is not None:
            err = float(np.max(np.abs(alpha - svd_alpha) / np.abs(svd_alpha)))
            note += f"; max alpha rel. diff from {source} {err:.1e}"
            print(f"# alphas vs {source}: max rel. diff {err:.2e}")
        if args.fast:
            fast = best_of(lambda: htsr.analyze(path, device="cpu", fast=True), repeat=1, warmup=0)
            fa = htsr.analyze(path, device="cpu", fast=True).details["alpha"].to_numpy()
            ferr = float(np.max(np.abs(fa - alpha) / np.abs(alpha)))
            print(f"# fast=True: {fast}; max alpha rel. diff from default {ferr:.1e}")
        print(HEADER)
        print(row(f"{args.layers} dense {args.size}² layers (Gaussian, Student-t ν=3)", ref.get("best"), ours.wall,
                  floor.wall, note))


if __name__ == "__main__":
    main()
