"""Overhead of htsr.Monitor on the over-training example's training loop.

The example is the training loop of ``examples/overtraining/study.py``: the
MLP 64→256→256→256→10 on 300 digits, batch 32, SGD with momentum, train and
test loss computed after every epoch, for ``--epochs`` epochs (150, as in the
study), with ``monitor.step(model, step, val_loss=...)`` called after every
optimizer step. Each variant is timed ``--repeat`` times, interleaved with the
plain loop, and the best run of each is kept; the overhead is
monitored / plain − 1. The last column is ``Monitor.overhead`` (its time inside
``step()`` over the time between calls) over all runs of the variant.

    python benchmarks/bench_monitor.py [--epochs 150] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import banner

import htsr

STUDY = Path(__file__).resolve().parents[1] / "examples" / "overtraining" / "study.py"


def load_study():
    spec = importlib.util.spec_from_file_location("study", STUDY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def train(study, epochs: int, monitor_kwargs: dict | None) -> tuple[float, int, float]:
    import torch

    Xtr, ytr, Xte, yte = study.load_digits_split(300, 0)
    X, y = torch.from_numpy(Xtr), torch.from_numpy(ytr).long()
    Xt, yt = torch.from_numpy(Xte), torch.from_numpy(yte).long()
    loss_fn = torch.nn.functional.cross_entropy
    val = None
    model = study.make_model(0, 256)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    monitor = htsr.Monitor(**monitor_kwargs) if monitor_kwargs is not None else None
    step = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(perm), 32):
            b = perm[i:i + 32]
            opt.zero_grad()
            loss_fn(model(X[b]), y[b]).backward()
            opt.step()
            if monitor is not None:
                monitor.step(model, step, val_loss=val)
            step += 1
        with torch.no_grad():  # the example's per-epoch evaluation
            float(loss_fn(model(X), y))
            val = float(loss_fn(model(Xt), yt))
    wall = time.perf_counter() - t0
    return wall, (len(monitor.history) if monitor else 0), (monitor.overhead if monitor else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    study = load_study()
    banner(f"htsr.Monitor overhead, {args.epochs} epochs of the over-training example (torch 1 thread)")
    variants = {
        "plain loop": None,
        "Monitor() default (every=None: 5% budget), randomize": {},
        "Monitor(every=1000), randomize": {"every": 1000},
        "Monitor(every=100), randomize": {"every": 100},
    }
    best: dict[str, tuple[float, int, float]] = {}
    own: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, kw in variants.items():
            result = train(study, args.epochs, kw)
            own[name].append(result[2])
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    base = best["plain loop"][0]
    print("| variant | wall (best) | vs plain (best walls) | analyses | Monitor.overhead: median (min–max) of the runs |")
    print("|---|---|---|---|---|")
    for name, (wall, n, _) in best.items():
        over = "—" if name == "plain loop" else f"{100 * (wall / base - 1):+.1f}%"
        o = sorted(own[name])
        own_s = "—" if name == "plain loop" else f"{100 * o[len(o) // 2]:.1f}% ({100 * o[0]:.1f}–{100 * o[-1]:.1f}%)"
        print(f"| {name} | {wall:.2f} s | {over} | {n} | {own_s} |")


if __name__ == "__main__":
    main()
