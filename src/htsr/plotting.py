"""Per-layer figures of a :class:`~htsr.report.Report` (matplotlib, imported only here, only when plotting).

For every analyzed layer (every slice with ``pool=False``) htsr draws the reference tool's five
figures, plus two more when the run asked for them:

=========  ====================================================================================
kind       figure
=========  ====================================================================================
esd        log-log ESD (log-spaced histogram) with the fitted power law and the xmin line
esd2       lin-lin ESD with the xmin line
esd3       ESD of log10 λ with the xmin and xmax lines
esd4       KS distance D of the fit against every candidate xmin
esd5       alpha of the fit against every candidate xmin
randesd    (``randomize``) original (green) and randomized (red) ESD, orange line at the largest
           randomized eigenvalue
mpfit      (``mp_fit``) ESD with the fitted Marchenko–Pastur density and its bulk edge λ+
deltaEs    (``deltas``) log10 gaps between consecutive eigenvalues, and ``level-stats`` their
           histogram (:mod:`htsr.option_plots`; ``rand-`` versions with ``randomize``)
=========  ====================================================================================

Figures are plain :class:`matplotlib.figure.Figure` objects rendered with the Agg canvas: pyplot is
never imported, no backend is selected and no global ``rcParams`` are changed (styles are applied
through a local :func:`matplotlib.rc_context`). Files are written only inside the folder given, under
names built from the layer id and a sanitized layer name.

Speed (:func:`render_pngs`, used by :func:`plot_report` and the HTML report): the layers' figures are
drawn in worker processes (forked, one per core, unless a non-daemon thread runs beside), each
worker reusing one figure per kind so that matplotlib's text-layout cache is hit; log axes label
their decades without mathtext, titles are placed without measuring the tick labels, and PNGs are
written with a 64-colour palette (these figures hold a few flat colours: about 4× smaller, the same
picture). The numbers in ``benchmarks/README.md``.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from .figures import STYLE, is_reused, layer_label, new_axes, new_figure, reuse
from .option_plots import option_figures, wants_option_figures
from .progress import in_notebook as _in_notebook  # a module global: tests stand in a notebook
from .spectral.powerlaw import OVER_TRAINED, UNDER_TRAINED  # the alpha thresholds, declared once

if TYPE_CHECKING:
    from .results import LayerResult
    from .spectral.powerlaw import PowerLawFit

KINDS = ("esd", "esd2", "esd3", "esd4", "esd5", "randesd", "mpfit")


def safe_filename(layer_id: Any, name: Any, slice_id: Any, kind: str) -> str:
    """File name for one figure: ``layer<id>[.s<slice>].<sanitized name>.<kind>.png``.

    Only letters, digits, ``-``, ``_`` and inner dots survive from the layer name, so no name
    (``../../x``, ``/etc/passwd``, ``C:\\x``) can reach outside the folder.

    Examples
    --------
    >>> safe_filename(3, "../../x", None, "esd")
    'layer3.x.esd.png'
    """
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))
    clean = re.sub(r"\.{2,}", ".", clean).strip("._-")[:80] or "layer"
    part = f".s{int(slice_id)}" if slice_id is not None and not _isnan(slice_id) else ""
    return f"layer{int(layer_id)}{part}.{clean}.{kind}.png"


def _isnan(v: Any) -> bool:
    try:
        return bool(math.isnan(v))
    except TypeError:
        return v is None


def _no_minor_labels(ax: Any) -> None:
    """Log axes: decade ticks only, labelled ``1e+02`` (minor log ticks are unreadable here; mathtext is slow)."""
    from matplotlib.ticker import LogFormatter, LogLocator, NullFormatter, NullLocator

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_locator(LogLocator(base=10.0, numticks=7))
            axis.set_minor_locator(NullLocator())
            axis.set_major_formatter(LogFormatter(labelOnlyBase=True))
        axis.set_minor_formatter(NullFormatter())


PALETTE_COLOURS = 64


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes (a palette of ``PALETTE_COLOURS`` colours) and release it.

    The Agg canvas's pixels go straight to a palette image (no intermediate RGBA PNG): these
    figures hold a few flat colours, so the picture is the same at a quarter of the bytes.
    """
    from PIL import Image

    if fig.dpi != dpi:
        fig.set_dpi(dpi)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    img = Image.fromarray(np.ascontiguousarray(rgba[..., :3])).quantize(
        colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    if not is_reused(fig):  # a reused figure is emptied by the next new_axes
        fig.clear()
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _fit_ok(fit: PowerLawFit | None) -> TypeGuard[PowerLawFit]:
    return fit is not None and bool(np.isfinite(fit.alpha)) and bool(np.isfinite(fit.xmin))


def _esd_loglog(r: LayerResult, evals: np.ndarray, fit: PowerLawFit | None) -> Any:
    from .spectral.powerlaw import EVALS_THRESH

    fig, ax = new_axes("esd")
    x = evals[evals > EVALS_THRESH]
    if x.size:
        lo, hi = x.min(), x.max()
        bins = np.logspace(np.log10(lo), np.log10(hi * 1.0001 if hi > lo else lo * 10), 101)
        ax.hist(x, bins=bins, density=True, histtype="stepfilled", color="tab:blue", alpha=0.6, label="ESD (histogram)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _no_minor_labels(ax)
    title = f"Log-log ESD of {layer_label(r)}\n"
    if _fit_ok(fit) and x.size:
        alpha, xmin, xmax = fit.alpha, fit.xmin, fit.xmax
        frac = np.count_nonzero(x >= xmin) / x.size
        grid = np.logspace(np.log10(xmin), np.log10(max(xmax, xmin * 1.0001)), 100)
        pdf = frac * (alpha - 1.0) / xmin * (grid / xmin) ** (-alpha)
        ax.plot(grid, pdf, "r--", lw=2, label=f"power law fit, α = {alpha:.3f}")
        ax.axvline(xmin, color="red", lw=1.2, label=f"xmin = {xmin:.4g}")
        title += f"α = {alpha:.3f}, D = {fit.D:.3f}, xmin = {xmin:.4g}, σ = {fit.sigma:.3f}"
    else:
        title += "power-law fit failed"
    ax.set_title(title)
    fig.subplots_adjust(top=0.84)
    ax.set_xlabel("eigenvalue λ of WᵀW (log scale)")
    ax.set_ylabel("density (log scale)")
    ax.legend(loc="lower left")
    return fig


def _esd_linlin(r: LayerResult, evals: np.ndarray, fit: PowerLawFit | None) -> Any:
    fig, ax = new_axes("esd2")
    ax.hist(evals, bins=100, density=True, histtype="stepfilled", color="tab:blue", alpha=0.7, label="ESD (histogram)")
    if _fit_ok(fit):
        ax.axvline(fit.xmin, color="red", label=f"xmin = {fit.xmin:.4g}")
    ax.set_title(f"Lin-lin ESD\n{layer_label(r)}")
    ax.set_xlabel("eigenvalue λ of WᵀW")
    ax.set_ylabel("density")
    ax.legend(loc="upper right")
    return fig


def _esd_log10(r: LayerResult, evals: np.ndarray, fit: PowerLawFit | None) -> Any:
    fig, ax = new_axes("esd3")
    x = evals[evals > 0]
    if x.size:
        ax.hist(np.log10(x), bins=100, density=True, histtype="stepfilled", color="tab:blue", alpha=0.7,
                label="ESD of log10 λ")
    if _fit_ok(fit):
        ax.axvline(np.log10(fit.xmin), color="red", label=f"xmin = {fit.xmin:.4g}")
    xmax = fit.xmax if fit is not None else float("nan")
    if np.isfinite(xmax) and xmax > 0:
        ax.axvline(np.log10(xmax), color="orange", label=f"xmax = {xmax:.4g}")
    ax.set_title(f"Log-lin ESD (histogram of log10 λ)\n{layer_label(r)}")
    ax.set_xlabel("log10 λ")
    ax.set_ylabel("density")
    ax.legend(loc="upper left")
    return fig


def _curve(r: LayerResult, fit: PowerLawFit, which: str) -> Any:
    fig, ax = new_axes("esd4" if which == "D" else "esd5")
    ys = fit.Ds if which == "D" else fit.alphas
    if fit is not None and fit.xmins.size:
        ax.plot(fit.xmins, ys, color="tab:blue", lw=1.2, label="KS distance D" if which == "D" else "α(xmin)")
        ax.set_xscale("log")
        _no_minor_labels(ax)
    if _fit_ok(fit):
        ax.axvline(fit.xmin, color="red", label=f"chosen xmin = {fit.xmin:.4g}")
    if which == "D":
        ax.set_title(f"KS distance vs candidate xmin\n{layer_label(r)}")
        ax.set_ylabel("KS distance D")
    else:
        ax.set_title(f"α vs candidate xmin\n{layer_label(r)}")
        ax.set_ylabel("power-law exponent α")
        for level, colour, what in ((OVER_TRAINED, "tab:orange", "over-trained below"),
                                    (UNDER_TRAINED, "tab:purple", "under-trained above")):
            ax.axhline(level, color=colour, ls=":", lw=1.2, label=f"α = {level:g} ({what})")
    ax.set_xlabel("candidate xmin (log scale)")
    ax.legend(loc="best")
    return fig


def trap_note(report: Any, key: tuple[int, int | None]) -> str:
    """What the traps of one row ``(layer_id, slice_id)`` are: ``outlier dimension 99 (5 layers); 1 isolated``.

    Read from the report's typed traps (:meth:`~htsr.report.Report.traps_of`) and their outlier
    dimensions; '' when the row has no trap.
    """
    parts: list[str] = []
    isolated = 0
    for t in report.traps_of(key):
        group = report.group(t)
        if t.kind == "shared_dim" and group is not None:
            text = f"outlier dimension {group.index} ({group.num_layers} layers)"
            if text not in parts:
                parts.append(text)
        elif t.kind == "isolated":
            isolated += 1
    if isolated:
        parts.append(f"{isolated} isolated")
    return "; ".join(parts)


def overlay_figure(result: LayerResult, note: str = "") -> Any:
    """Original (green) vs randomized (red) ESD on a log10 axis; orange line at max randomized λ.

    ``result`` is a :class:`~htsr.results.LayerResult` of a ``randomize=True`` run; ``note``
    (:func:`trap_note`) names the outlier dimension its traps belong to, as a third title line.
    """
    assert result.randomized is not None  # a randomize=True result (see above)
    fig, ax = new_axes("randesd")
    x = np.asarray(result.evals, dtype=float)
    r = np.asarray(result.randomized.evals, dtype=float)
    x, r = x[x > 0], r[r > 0]
    both = np.concatenate([np.log10(x), np.log10(r)]) if x.size + r.size else np.zeros(1)
    bins = np.linspace(both.min(), both.max() + 1e-9, 101)
    if x.size:
        ax.hist(np.log10(x), bins=bins, density=True, histtype="stepfilled", color="green", alpha=0.6, label="original")
    if r.size:
        ax.hist(np.log10(r), bins=bins, density=True, histtype="stepfilled", color="red", alpha=0.5, label="randomized")
        ax.axvline(np.log10(r.max()), color="orange", lw=2, label=f"max randomized λ = {r.max():.4g}")
    rfit = result.randomized.fit
    edge = rfit.bulk_max if rfit is not None else float("nan")
    if np.isfinite(edge) and edge > 0:
        ax.axvline(np.log10(edge), color="darkred", ls="--", lw=1, label=f"randomized MP edge = {edge:.4g}")
    traps = result.traps.num_traps if result.traps is not None else None
    extra = "" if traps is None else f" (correlation traps: {int(traps)})"
    ax.set_title(f"Original vs randomized ESD{extra}\n{layer_label(result)}" + (f"\ntraps: {note}" if note else ""))
    ax.set_xlabel("log10 λ")
    ax.set_ylabel("density")
    ax.legend(loc="upper left")
    return fig


def _mp(r: LayerResult, evals: np.ndarray) -> Any:
    from .spectral.marchenko_pastur import mp_density

    fig, ax = new_axes("mpfit")
    mp = r.mp
    assert mp is not None  # drawn only for an mp_fit result
    Q, sigma, scale, edge = r.Q, mp.sigma_mp, mp.W_scale, mp.bulk_max
    ok = all(np.isfinite(v) and v > 0 for v in (Q, sigma, scale))
    top = float(evals.max()) if evals.size else 1.0
    right = top if not (ok and np.isfinite(edge)) else min(top, 3.0 * edge)
    shown = evals[evals <= right]
    ax.hist(shown, bins=100, density=False, weights=np.full(shown.size, 1.0 / max(evals.size, 1)),
            histtype="stepfilled",
            color="tab:blue", alpha=0.6, label="ESD (share of eigenvalues per bin)")
    if ok:
        width = float(np.diff(np.histogram_bin_edges(shown, bins=100)[:2])[0]) if shown.size else 1.0
        grid = np.linspace(max(evals.min(), 0.0), right, 600)
        s2 = scale ** 2  # rescaled λ' = λ·W_scale²; density in original units = s2·ρ(λ·s2)
        ax.plot(grid, s2 * mp_density(grid * s2, Q, sigma) * width, color="red", lw=2,
                label=f"MP fit, σ = {sigma:.3f}, Q = {Q:.3g}")
    if np.isfinite(edge):
        ax.axvline(edge, color="orange", lw=1.5, label=f"bulk edge λ+ = {edge:.4g}")
    beyond = int(np.count_nonzero(evals > right))
    sub = f"; spikes: {int(mp.num_spikes)}"
    if beyond:
        sub += f"; {beyond} eigenvalue(s) beyond the axis (max {top:.4g})"
    ax.set_title(f"Marchenko–Pastur fit of {layer_label(r)}\nmp_softrank = {mp.mp_softrank:.3g}{sub}")
    ax.set_xlabel("eigenvalue λ of WᵀW")
    ax.set_ylabel("share of eigenvalues per bin")
    ax.legend(loc="upper right")
    return fig


def layer_figures(result: LayerResult, trap_text: str = "", kinds: Collection[str] | None = None) -> Iterator[tuple[str, Any]]:
    """Yield ``(kind, Figure)`` for one :class:`~htsr.results.LayerResult` (nothing when it has no ESD).

    ``trap_text`` (:func:`trap_note`) is shown on the randomized-ESD figure; ``kinds`` limits the
    figures drawn (default: all that the result supports).
    """
    import matplotlib

    if result.esd is None:
        return
    evals = np.asarray(result.evals, dtype=float)
    fit = result.fit
    drawers: list[tuple[str, Callable[[], Any]]] = [
        ("esd", lambda: _esd_loglog(result, evals, fit)),
        ("esd2", lambda: _esd_linlin(result, evals, fit)),
        ("esd3", lambda: _esd_log10(result, evals, fit)),
    ]
    if fit is not None and fit.xmins.size:
        drawers += [("esd4", lambda: _curve(result, fit, "D")), ("esd5", lambda: _curve(result, fit, "alpha"))]
    if result.randomized is not None:
        drawers.append(("randesd", lambda: overlay_figure(result, trap_text)))
    if result.mp is not None and np.isfinite(result.mp.sigma_mp):
        drawers.append(("mpfit", lambda: _mp(result, evals)))
    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        for kind, draw in drawers:
            if kinds is None or kind in kinds:
                yield kind, draw()


def require_matplotlib() -> None:
    """Raise a clear :class:`~htsr.errors.HtsrError` when matplotlib is not installed."""
    from .errors import HtsrError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise HtsrError("plots need matplotlib: pip install 'htsr[plot]'") from None


#: From this many layers on, :func:`render_pngs` draws in worker processes.
PARALLEL_MIN_LAYERS = 8


def _layer_pngs(result: LayerResult, trap_text: str, options: bool, kinds: Collection[str] | None) -> list[tuple[str, bytes]]:
    """PNG bytes of one layer's figures (a worker's task): ``kinds`` of them, then the options' when ``options``."""
    figures = layer_figures(result, trap_text, kinds)
    if options:
        figures = itertools.chain(figures, option_figures(result))
    return [(kind, figure_png(fig)) for kind, fig in figures]


def _reusing_layer_pngs(*args: Any) -> list[tuple[str, bytes]]:
    reuse(True)  # in a worker process: for the rest of its life
    return _layer_pngs(*args)


def _parallel_workers(n_layers: int) -> int:
    """Worker processes for drawing: one per core (≤ 4) when forking is safe here, else 0 (draw in-process).

    Forking copies only the calling thread. Daemon threads (tqdm's monitor, a notebook kernel's
    I/O threads) are idle helpers whose locks the children never touch; another non-daemon thread
    could be mid-work holding a lock the child needs, so then htsr draws in-process. Only fork is
    used: spawn and forkserver re-import the caller's ``__main__``, which breaks scripts without a
    ``if __name__ == "__main__"`` guard.
    """
    if n_layers < PARALLEL_MIN_LAYERS or sys.platform != "linux":
        return 0
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 4) if cores > 1 else 0


def _warm_up() -> None:
    """Import the drawing modules and load the fonts once, here (forked workers inherit them)."""
    import matplotlib

    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        fig = new_figure()
        fig.add_subplot().set_title("α λ 0123456789")
        figure_png(fig)


#: The figures that need no other layer's results (the ``randesd`` figure names its traps' outlier dimensions).
OWN_KINDS = ("esd", "esd2", "esd3", "esd4", "esd5", "mpfit")


def _early_worker() -> None:
    import contextlib

    reuse(True)
    with contextlib.suppress(OSError):  # the analysis threads come first; the figures take the idle cores
        os.nice(EARLY_NICE)


#: How much lower the early figure workers' priority is than the analysis's (``os.nice``).
EARLY_NICE = 5


class EarlyFigures:
    """Draws the layers' figures in forked worker processes while the analysis still runs.

    Started before the analysis (the workers are forked while no other thread runs, see
    :func:`_parallel_workers`); :meth:`add` hands each layer's result to them as it comes out, and
    they draw its figures except ``randesd``, whose title names outlier dimensions shared across
    layers: :meth:`finish` draws those once the report (its trap grouping) exists. Every figure is
    the one :func:`render_pngs` draws; the workers run at a lower priority (``EARLY_NICE``), so on a
    busy machine they use the cores the analysis leaves idle.
    """

    def __init__(self, pool: Any, deltas: bool) -> None:
        self._pool = pool
        self._deltas = deltas
        self._tasks: dict[int, tuple[LayerResult, Any]] = {}

    @classmethod
    def start(cls, n_layers: int, deltas: bool) -> EarlyFigures | None:
        """Fork the drawing workers, or None where :func:`render_pngs` would draw in-process."""
        if not _parallel_workers(n_layers):
            return None
        require_matplotlib()
        import multiprocessing

        _warm_up()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see render_pngs
            pool = multiprocessing.get_context("fork").Pool(_parallel_workers(n_layers), initializer=_early_worker)
        return cls(pool, deltas)

    def add(self, results: list[LayerResult]) -> None:
        """Start drawing these results' own figures."""
        for r in results:
            if r.esd is not None:
                self._tasks[id(r)] = (r, self._pool.apply_async(_layer_pngs, (r, "", self._deltas, OWN_KINDS)))

    def finish(self, report: Any, on_layer: Callable[[], None] | None = None) -> dict[tuple, list[tuple[str, bytes]]]:
        """Every layer's figures, as :func:`render_pngs` gives them (a layer not added is drawn now)."""
        late = {}
        for r in report.layers:
            if r.esd is None:
                continue
            own = self._tasks.get(id(r))
            if own is None or own[0] is not r:
                late[r.key] = (None, self._pool.apply_async(
                    _layer_pngs, (r, trap_note(report, r.key), wants_option_figures(report), None)))
            elif r.randomized is not None:
                late[r.key] = (own[1], self._pool.apply_async(
                    _layer_pngs, (r, trap_note(report, r.key), False, ("randesd",))))
            else:
                late[r.key] = (own[1], None)
        drawn: dict[tuple, list[tuple[str, bytes]]] = {}
        for key, (own_task, rest) in late.items():
            pngs = own_task.get() if own_task is not None else []
            if rest is not None and own_task is None:
                pngs = rest.get()
            elif rest is not None:  # randesd after esd … esd5, as layer_figures orders them
                at = next((i for i, (kind, _) in enumerate(pngs) if kind not in OWN_KINDS[:5]), len(pngs))
                pngs = pngs[:at] + rest.get() + pngs[at:]
            drawn[key] = pngs
            if on_layer is not None:
                on_layer()
        report.pngs.update(((key, k), png) for key, pngs in drawn.items() for k, png in pngs)
        return drawn

    def close(self) -> None:
        """Stop the workers (after :meth:`finish`, or when the analysis failed)."""
        self._pool.terminate()
        self._pool.join()


def render_pngs(report: Any, kinds: Collection[str] | None = None,
                on_layer: Callable[[], None] | None = None) -> dict[tuple, list[tuple[str, bytes]]]:
    """Every layer's figures as PNG bytes: ``{(layer_id, slice_id): [(kind, png), …]}`` in layer order.

    Drawn in forked worker processes when there are many layers and forking is safe (see
    :func:`_parallel_workers`), else here; either way each figure is the same picture. With
    ``kinds``, figures already in ``report.pngs`` are taken from there; every figure drawn is
    added to it (the HTML report reuses what :func:`plot_report` drew).

    Parameters
    ----------
    report : Report
    kinds : collection of str, optional
        Only these kinds (default: every figure, including the ``deltas`` option's).
    on_layer : callable, optional
        Called once per layer drawn (progress).
    """

    require_matplotlib()
    cache: dict = report.pngs
    layers = [r for r in report.layers if r.esd is not None]
    tasks = []
    for r in layers:
        need = None if kinds is None else [k for k in kinds if (r.key, k) not in cache]
        if need is None or need:
            tasks.append((r, trap_note(report, r.key), need is None and wants_option_figures(report), need))
    drawn: dict[tuple, list[tuple[str, bytes]]] = {}
    workers = _parallel_workers(len(tasks))
    if workers:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _warm_up()  # the workers inherit matplotlib, PIL and the loaded fonts instead of each loading them

        with warnings.catch_warnings():
            # Python ≥ 3.12 warns on any fork beside other threads; _parallel_workers allowed only idle daemons
            warnings.simplefilter("ignore", DeprecationWarning)
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                for task, out in zip(tasks, pool.map(_reusing_layer_pngs, *zip(*tasks))):
                    drawn[task[0].key] = out
                    if on_layer is not None:
                        on_layer()
    else:
        reuse(True)
        try:
            for task in tasks:
                drawn[task[0].key] = _layer_pngs(*task)
                if on_layer is not None:
                    on_layer()
        finally:
            reuse(False)
    for key, pngs in drawn.items():
        cache.update(((key, k), png) for k, png in pngs)
    if kinds is None:
        return drawn
    return {r.key: [(k, cache[(r.key, k)]) for k in kinds if (r.key, k) in cache] for r in layers}


def plot_report(report: Any, show: bool = False, savedir: str | Path | None = None,
                progress: bool | None = None, early: EarlyFigures | None = None) -> list[Path]:
    """Draw every layer's figures; show them inline in Jupyter and/or save them as PNGs.

    Parameters
    ----------
    report : Report
        A report of :func:`htsr.analyze` (with ``plot=True`` or ``savefig=`` it keeps the fit curves
        that the ``esd4``/``esd5`` figures show).
    show : bool
        Display each figure inline when running in a Jupyter kernel (outside one nothing is shown:
        htsr never opens GUI windows).
    savedir : str or Path, optional
        Folder (created if needed) to write ``layer<id>.<name>.<kind>.png`` files into; nothing is
        written anywhere else.
    progress : bool or None
        A progress bar over the layers (None: where a person watches; see :mod:`htsr.progress`).
    early : EarlyFigures, optional
        The workers that have drawn the layers' figures during the analysis (:func:`htsr.analyze`).

    Returns
    -------
    list of Path
        The files written.
    """
    from .files import atomic_write

    require_matplotlib()
    folder = None
    root = None
    if savedir:
        folder = Path(savedir)
        folder.mkdir(parents=True, exist_ok=True)
        root = folder.resolve()
    display = None
    if show and _in_notebook():
        from IPython.display import Image
        from IPython.display import display as _display

        def display(png: bytes) -> None:
            _display(Image(data=png))
    written: list[Path] = []
    if folder is None and display is None:
        return written
    from .progress import Progress

    names = {r.key: r.name for r in report.layers}
    with Progress(sum(r.esd is not None for r in report.layers), progress, desc="htsr figures", unit="layer") as bar:
        drawn = early.finish(report, bar.update) if early is not None else render_pngs(report, on_layer=bar.update)
    for key, pngs in drawn.items():
        for kind, png in pngs:
            if display is not None:
                display(png)
            if folder is not None:
                target = folder / safe_filename(key[0], names[key], key[1], kind)
                if target.resolve().parent != root:  # defence in depth; safe_filename has no separators
                    raise ValueError(f"figure path {target} escapes {folder}")
                atomic_write(target, png)
                written.append(target)
    return written
