"""``htsr.fit_powerlaw`` next to the straightforward exhaustive loop, 1k–50k eigenvalues.

Usage::

    python benchmarks/bench_powerlaw.py [--sizes 1000,5000,15000,50000] [--repeat 3]

The loop is the definition (issue 5, item 4): for each candidate i, alpha from a
suffix sum of logs and D = max |1 − exp((1−α)(log x_j − log x_i)) − j/n| over
the tail with numpy; the first minimum wins. Two kinds of input per size:
``mp+tail`` (a Marchenko–Pastur bulk with a power-law tail: what trained layers
look like) and ``pareto`` (a pure power law: every xmin fits about as well, the
hardest case for pruning). Each row checks that xmin is identical and alpha, D
equal to 1e-9.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import banner  # noqa: E402


def plain_loop(evals: np.ndarray, thresh: float = 1e-5) -> tuple[float, float, float]:
    x = np.sort(evals)
    x = x[x > thresh]
    lx = np.log(x)
    n = x.size
    suffix = np.cumsum(lx[::-1])[::-1]
    best = (np.inf, np.nan, np.nan)
    for i in range(n - 1):
        ni = n - i
        a = 1.0 + ni / (suffix[i] - ni * lx[i])
        D = np.max(np.abs(1.0 - np.exp((1.0 - a) * (lx[i:] - lx[i])) - np.arange(ni) / ni)) if a > 1 else 1.0
        if D < best[0]:
            best = (D, a, x[i])
    return best[2], best[1], best[0]


def inputs(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    m = int(0.97 * n)
    q = 2.0  # a Marchenko–Pastur bulk sampled by its quantiles, plus a Pareto tail above its edge
    lo, hi = (1 - 1 / np.sqrt(q)) ** 2, (1 + 1 / np.sqrt(q)) ** 2
    grid = np.linspace(lo, hi, 20001)
    dens = np.sqrt(np.clip((hi - grid) * (grid - lo), 0, None)) / grid
    cdf = np.cumsum(dens) / dens.sum()
    bulk = np.interp(rng.random(m), cdf, grid)
    tail = hi * (1 - rng.random(n - m)) ** (-1 / 1.5)
    return {"mp+tail": np.concatenate([bulk, tail]), "pareto": (1 - rng.random(n)) ** (-1 / 2.0)}


def best_time(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return min(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,2000,5000,10000,15000,30000,50000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loop-max", type=int, default=50000, help="largest size at which the loop is run")
    args = ap.parse_args()

    import htsr

    banner("fit_powerlaw vs the exhaustive loop")
    print("| eigenvalues | input | loop | htsr.fit_powerlaw | speed-up | same xmin, alpha & D |")
    print("|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        for kind, ev in inputs(n, seed=n).items():
            fit = htsr.fit_powerlaw(ev)
            ours = best_time(lambda: htsr.fit_powerlaw(ev), args.repeat)
            if n <= args.loop_max:
                t = time.perf_counter()
                xmin, alpha, D = plain_loop(ev)
                loop = time.perf_counter() - t
                same = (xmin == fit.xmin and abs(alpha - fit.alpha) <= 1e-9 * alpha and abs(D - fit.D) <= 1e-9 * D)
                print(f"| {n:,} | {kind} | {loop:.3f} s | {ours * 1e3:.1f} ms | {loop / ours:.0f}× | {'yes' if same else 'NO'} |")
            else:
                print(f"| {n:,} | {kind} | — | {ours * 1e3:.1f} ms | — | — |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
