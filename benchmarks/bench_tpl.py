"""``fit_package`` (htsr's implementation of the ``powerlaw`` package's fits) next to ``powerlaw.Fit``.

Usage::

    python benchmarks/bench_tpl.py [--sizes 100,200,400] [--repeat 1]

Needs ``powerlaw<2`` (a test dependency of htsr, never a runtime one). Input: the
ESD of a Student-t(3) matrix (N = 2M) for each size M. For each size it times the
truncated-power-law search (``fit='TPL'``: an xmin search with a Nelder–Mead
likelihood fit and the model CDF at every candidate) and the power law with
``xmax='force'``, in the same process, and checks that alpha, Lambda, xmin and D
agree to 1e-9.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import banner  # noqa: E402


def esd(m: int, seed: int = 0) -> np.ndarray:
    W = np.random.default_rng(seed).standard_t(3, size=(2 * m, m)) * 0.05
    return np.sort(np.linalg.eigvalsh(W.T @ W))


def reference(x: np.ndarray, dist: str, xmax):
    import powerlaw

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        f = powerlaw.Fit(x, xmax=xmax, verbose=False, distribution=dist, xmin_distribution=dist)
        lam = f.truncated_power_law.Lambda if dist != "power_law" else float("nan")
    return f.alpha, lam, f.xmin, f.D


def main() -> None:
    from htsr.spectral.tpl import fit_package

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,200,400")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    banner("fit_package (htsr) vs powerlaw.Fit (powerlaw<2)")
    print("| eigenvalues | fit | powerlaw.Fit | htsr fit_package | speed-up | same alpha, Lambda, xmin, D |")
    print("|---|---|---|---|---|---|")
    for m in (int(s) for s in args.sizes.split(",")):
        x = esd(m)
        x = x[x > 1e-5]
        for dist, xmax, label in (("truncated_power_law", None, "TPL"), ("power_law", float(x.max()), "PL, xmax='force'")):
            t0 = time.perf_counter()
            ref = reference(x, dist, xmax)
            t_ref = time.perf_counter() - t0
            best = np.inf
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                ours = fit_package(x, dist, xmax=xmax)
                best = min(best, time.perf_counter() - t0)
            same = np.allclose([ours.alpha, ours.Lambda, ours.xmin, ours.D], ref, rtol=1e-9, atol=0, equal_nan=True)
            print(f"| {x.size} | {label} | {t_ref:.2f} s | {best:.2f} s | {t_ref / best:.1f}× | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
