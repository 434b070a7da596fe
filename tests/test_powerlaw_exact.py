"""The pruned xmin search gives exactly the straightforward exhaustive loop's answer.

The loop below is the definition (issue 5, item 4): for every candidate i (every
sorted eigenvalue above 1e-5 but the largest), α from a suffix sum of logs and
D = max_j |1 − exp((1−α)(log x_j − log x_i)) − j/n_i| over the tail; the first
minimum of D wins. ``(x_i/x_i)^(1−α)`` is 1 even when α = +inf (a tail of equal
values), as in the reference, which gives D = (n_i − 1)/n_i there.
"""

from __future__ import annotations

import numpy as np
import pytest

import htsr
from htsr.spectral import powerlaw


def plain_search(evals: np.ndarray, thresh: float = 1e-5) -> tuple[int, float, float, np.ndarray]:
    """(index of the winning xmin, alpha, D, the sorted data) by the O(n²) loop."""
    x = np.sort(np.asarray(evals, dtype=np.float64))
    x = x[x > thresh]
    lx = np.log(x)
    n = x.size
    suffix = np.cumsum(lx[::-1])[::-1]
    best = (-1, np.nan, np.inf)
    for i in range(n - 1):
        ni = n - i
        with np.errstate(divide="ignore"):
            a = 1.0 + ni / (suffix[i] - ni * lx[i])
        if a > 1.0:
            diff = lx[i:] - lx[i]
            with np.errstate(invalid="ignore"):
                model = np.exp((1.0 - a) * diff)
            model[diff == 0] = 1.0
            D = float(np.max(np.abs(1.0 - model - np.arange(ni) / ni)))
        else:
            D = 1.0
        if D < best[2]:  # strict: the first minimum wins
            best = (i, a, D)
    return best[0], best[1], best[2], x


def _wishart(rng: np.random.Generator, n: int, q: float = 2.0) -> np.ndarray:
    w = rng.standard_normal((int(q * n), n))
    return np.linalg.eigvalsh(w.T @ w)


def _cases():
    """(label, eigenvalues) on many seeded inputs: heavy tails, MP bulks, mixtures, ties, small n."""
    out = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n = [300, 700, 1500, 2500, 600, 4000][seed]
        out.append((f"pareto-{seed}", (1 - rng.random(n)) ** (-1 / rng.uniform(0.8, 4.0))))
        out.append((f"student-{seed}", rng.standard_t(3, n) ** 2))
        out.append((f"lognormal-{seed}", rng.lognormal(0.0, 1.5, n)))
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        bulk = _wishart(rng, [200, 500, 900][seed])
        out.append((f"wishart-{seed}", bulk))
        out.append((f"wishart+spikes-{seed}", np.concatenate([bulk, bulk.max() * (1 - rng.random(15)) ** -0.7])))
    rng = np.random.default_rng(7)
    # ties: values rounded onto a coarse grid, many duplicates including the largest
    out.append(("rounded", np.round(rng.pareto(2.0, 1200) + 1, 1)))
    out.append(("integers", rng.integers(1, 30, 800).astype(float)))
    out.append(("tied-top", np.concatenate([rng.random(400) + 1, [50.0, 50.0, 50.0]])))
    out.append(("tied-top-small", np.array([1.0, 2.0, 3.0, 5.0, 5.0])))
    out.append(("below-thresh", np.concatenate([np.full(100, 1e-7), (1 - rng.random(500)) ** -0.5])))
    for n in (2, 3, 4, 5, 8, 13, 21, 40, 255, 256, 257, 258, 300):
        out.append((f"small-{n}", (1 - rng.random(n)) ** (-1 / 1.7)))
    return out


CASES = _cases()


@pytest.mark.parametrize("label,evals", CASES, ids=[c[0] for c in CASES])
def test_fast_search_equals_exhaustive_loop(label, evals):
    i, alpha, D, x = plain_search(evals)
    fit = htsr.fit_powerlaw(evals)
    if not np.isfinite(alpha):
        assert fit.status == "failed"
        return
    assert fit.status == "success", fit.reason
    assert fit.xmin == x[i], (label, fit.xmin, x[i])
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.D == pytest.approx(D, rel=1e-12, abs=0)
    assert fit.num_pl_spikes == int(np.count_nonzero(x >= x[i]))
    assert fit.sigma == pytest.approx((alpha - 1) / np.sqrt(x.size - i), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_every_candidate_D_is_the_loops(seed):
    """The curves and the pruned search's exact evaluator give the loop's D for every candidate."""
    rng = np.random.default_rng(seed)
    x = np.sort((1 - rng.random(900)) ** (-1 / 1.3))
    lx = np.log(x)
    alphas = powerlaw._alphas(lx)
    idx = np.arange(alphas.size)
    exact = powerlaw._exact_D(lx, alphas, idx)
    refined = powerlaw._refined_D(lx, alphas, idx)
    loop = np.array([np.max(np.abs(1 - np.exp((1 - alphas[i]) * (lx[i:] - lx[i])) - np.arange(x.size - i) / (x.size - i)))
                     for i in idx])
    np.testing.assert_array_equal(exact, loop)
    np.testing.assert_array_equal(refined, loop)
    curves = htsr.fit_powerlaw(x, curves=True)
    np.testing.assert_array_equal(curves.Ds, loop)


def test_tied_values():
    """Tails of equal values: α = +inf there, D = (n_i − 1)/n_i, and no NaN ever wins the search."""
    flat = htsr.fit_powerlaw(np.full(50, 3.0))
    assert flat.status == "failed" and np.isnan(flat.alpha)
    for n_low in (30, 400):  # the plain path (≤ 256 candidates) and the pruned one
        evals = np.concatenate([np.random.default_rng(n_low).random(n_low) + 1.0, [9.0, 9.0]])
        i, alpha, D, x = plain_search(evals)
        fit = htsr.fit_powerlaw(evals)
        assert fit.status == "success" and fit.xmin == x[i] and fit.D == D
        curves = htsr.fit_powerlaw(evals, curves=True)
        assert curves.Ds[-1] == 0.5  # the last candidate: two equal values


def test_pruned_path_is_exercised_and_exact_at_15k():
    """At 15,000 eigenvalues (a Pareto tail: the hardest case for pruning) the answer is the loop's."""
    rng = np.random.default_rng(11)
    evals = (1 - rng.random(15000)) ** (-1 / 1.5)
    i, alpha, D, x = plain_search(evals)
    fit = htsr.fit_powerlaw(evals)
    assert fit.xmin == x[i] and fit.alpha == alpha and fit.D == D
