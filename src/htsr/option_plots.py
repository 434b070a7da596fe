"""Figures of the reference's plot options: level spacings (``deltas``) and eigenvector metrics (``vectors``).

Same conventions as :mod:`htsr.plotting`: plain matplotlib ``Figure`` objects on
the Agg canvas, pyplot never imported, styles through a local ``rc_context``.

=============  ==============================================================================
kind           figure
=============  ==============================================================================
deltaEs        log10 of the gaps between consecutive eigenvalues, in order, with a red line
               at xmin (randomized ESD: at its bulk edge λ+)
level-stats    histogram of those log10 gaps (the level statistics)
vector_metrics per eigenvector, in eigenvalue order: discrete entropy, localization ratio,
               participation ratio and the eigenvalue, with the xmin position
vector_hists   histograms of the three metrics for the bulk and the tail eigenvectors
=============  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .figures import STYLE, layer_label, new_figure


def level_spacings(evals: np.ndarray) -> np.ndarray:
    """log10 of the positive gaps between consecutive sorted eigenvalues (zero gaps dropped)."""
    gaps = np.diff(np.sort(np.asarray(evals, dtype=np.float64)))
    gaps = gaps[gaps > 0]
    return np.log10(gaps)


def deltas_figures(row: Any, evals: np.ndarray, mark: float, randomized: bool = False) -> Iterator[tuple[str, Any]]:
    """``deltaEs`` and ``level-stats`` figures of one ESD; ``mark`` is xmin (or λ+ for the randomized ESD)."""
    ev = np.sort(np.asarray(evals, dtype=np.float64))
    with np.errstate(divide="ignore"):
        logs = np.log10(np.diff(ev))
    color = "mediumorchid" if randomized else "tab:blue"
    what = "randomized " if randomized else ""
    fig = new_figure()
    ax = fig.add_subplot()
    ok = np.isfinite(logs)
    ax.scatter(np.flatnonzero(ok), logs[ok], color=color, marker=".", s=8)
    if np.isfinite(mark):
        ax.axvline(int(np.searchsorted(ev, mark, side="left")), color="red",
                   label=("λ+" if randomized else "xmin") + f" = {mark:.4g}")
        ax.legend(loc="upper left")
    ax.set_title(f"log10 gaps between consecutive {what}eigenvalues\n{layer_label(row)}")
    ax.set_xlabel("index of the gap (ascending eigenvalues)")
    ax.set_ylabel("log10 Δλ")
    yield ("rand-" if randomized else "") + "deltaEs", fig
    fig = new_figure()
    ax = fig.add_subplot()
    if ok.any():
        ax.hist(logs[ok], bins=100, density=True, color=color)
    ax.set_title(f"Level statistics (histogram of log10 Δλ) of the {what}ESD\n{layer_label(row)}")
    ax.set_xlabel("log10 Δλ")
    ax.set_ylabel("density")
    yield ("rand-" if randomized else "") + "level-stats", fig


def vector_figures(row: Any, vm: Any, num_tail: int | None) -> Iterator[tuple[str, Any]]:
    """``vector_metrics`` and ``vector_hists`` figures from a :class:`~htsr.spectral.vectors.VectorMetrics`."""
    n = vm.evals.size
    k = n if num_tail is None else max(0, min(int(num_tail), n))
    series = (("discrete entropy", vm.vec_entropy), ("localization ratio", vm.loc_ratio),
              ("participation ratio", vm.part_ratio), ("eigenvalue", vm.evals))
    fig = new_figure()
    fig.set_size_inches(7.0, 9.0)
    axs = fig.subplots(4, 1, sharex=True)
    x = np.arange(n)
    for ax, (name, data) in zip(axs, series):
        ax.scatter(x, data, marker=".", s=8)
        ax.set_ylabel(name, fontsize=8)
        if 0 < k < n:
            ax.axvline(n - k - 0.5, color="red", label="xmin")
    axs[0].set_title(f"Eigenvector metrics in eigenvalue order\n{layer_label(row)}")
    axs[-1].set_xlabel("eigenvector (ascending eigenvalue)")
    yield "vector_metrics", fig
    fig = new_figure()
    fig.set_size_inches(7.0, 7.5)
    axs = fig.subplots(3, 1)
    tail = np.zeros(n, dtype=bool)
    tail[n - k:] = True
    for ax, (name, data) in zip(axs, series[:3]):
        if (~tail).any():
            ax.hist(data[~tail], bins=100, density=True, color="tab:blue", alpha=0.5, label="bulk")
        if tail.any():
            ax.hist(data[tail], bins=100, density=True, color="purple", alpha=0.5, label="tail")
        ax.set_ylabel(name, fontsize=8)
        ax.legend(loc="upper right")
    axs[0].set_title(f"Eigenvector metrics, bulk and tail\n{layer_label(row)}")
    yield "vector_hists", fig


def wants_option_figures(report: Any) -> bool:
    """True when the report's run asked for the option figures (``deltas=True``)."""
    return bool(report.config.deltas)


def option_figures(result: Any) -> Iterator[tuple[str, Any]]:
    """The option figures (``deltas=True``: level spacings) of one :class:`~htsr.results.LayerResult`."""
    import matplotlib

    if result.esd is None:
        return
    xmin = float(result.fit.xmin) if result.fit is not None else float("nan")
    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        yield from deltas_figures(result, result.evals, xmin)
        rand = result.randomized
        if rand is not None:
            edge = float(rand.fit.bulk_max) if rand.fit is not None else float("nan")
            yield from deltas_figures(result, rand.evals, edge, randomized=True)
