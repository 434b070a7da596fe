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
"""

from __future__ import annotations

import io
import itertools
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

KINDS = ("esd", "esd2", "esd3", "esd4", "esd5", "randesd", "mpfit")
_STYLE: dict[str, Any] = {"figure.figsize": (7.0, 4.6), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
          "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 8.5, "text.usetex": False}


def _plain(text: Any, limit: int = 70) -> str:
    """A model string made safe for a matplotlib title: no mathtext (``$`` escaped), bounded length."""
    s = str(text)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("\\", "\\\\").replace("$", r"\$")


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


def _label(r) -> str:
    s = "" if r.slice_id is None else f" slice {int(r.slice_id)}"
    return f"layer {int(r.layer_id)}{s}: {_plain(r.name, 60)}"


def _new_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.11, top=0.86)
    FigureCanvasAgg(fig)
    return fig


def _no_minor_labels(ax) -> None:
    """Log axes: decade ticks only (minor log ticks are unreadable here and slow to lay out)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())


def figure_png(fig, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes and release it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    fig.clear()
    return buf.getvalue()


def _fit_ok(fit) -> bool:
    return fit is not None and bool(np.isfinite(fit.alpha)) and bool(np.isfinite(fit.xmin))


def _esd_loglog(r, evals: np.ndarray, fit) -> Any:
    from .spectral.powerlaw import EVALS_THRESH

    fig = _new_figure()
    ax = fig.add_subplot()
    x = evals[evals > EVALS_THRESH]
    if x.size:
        lo, hi = x.min(), x.max()
        bins = np.logspace(np.log10(lo), np.log10(hi * 1.0001 if hi > lo else lo * 10), 101)
        ax.hist(x, bins=bins, density=True, histtype="stepfilled", color="tab:blue", alpha=0.6, label="ESD (histogram)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _no_minor_labels(ax)
    title = f"Log-log ESD of {_label(r)}\n"
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


def _esd_linlin(r, evals: np.ndarray, fit) -> Any:
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.hist(evals, bins=100, density=True, histtype="stepfilled", color="tab:blue", alpha=0.7, label="ESD (histogram)")
    if _fit_ok(fit):
        ax.axvline(fit.xmin, color="red", label=f"xmin = {fit.xmin:.4g}")
    ax.set_title(f"Lin-lin ESD\n{_label(r)}")
    ax.set_xlabel("eigenvalue λ of WᵀW")
    ax.set_ylabel("density")
    ax.legend(loc="upper right")
    return fig


def _esd_log10(r, evals: np.ndarray, fit) -> Any:
    fig = _new_figure()
    ax = fig.add_subplot()
    x = evals[evals > 0]
    if x.size:
        ax.hist(np.log10(x), bins=100, density=True, histtype="stepfilled", color="tab:blue", alpha=0.7,
                label="ESD of log10 λ")
    if _fit_ok(fit):
        ax.axvline(np.log10(fit.xmin), color="red", label=f"xmin = {fit.xmin:.4g}")
    xmax = fit.xmax if fit is not None else float("nan")
    if np.isfinite(xmax) and xmax > 0:
        ax.axvline(np.log10(xmax), color="orange", label=f"xmax = {xmax:.4g}")
    ax.set_title(f"Log-lin ESD (histogram of log10 λ)\n{_label(r)}")
    ax.set_xlabel("log10 λ")
    ax.set_ylabel("density")
    ax.legend(loc="upper left")
    return fig


def _curve(r, fit, which: str) -> Any:
    fig = _new_figure()
    ax = fig.add_subplot()
    ys = fit.Ds if which == "D" else fit.alphas
    if fit is not None and fit.xmins.size:
        ax.plot(fit.xmins, ys, color="tab:blue", lw=1.2, label="KS distance D" if which == "D" else "α(xmin)")
        ax.set_xscale("log")
        _no_minor_labels(ax)
    if _fit_ok(fit):
        ax.axvline(fit.xmin, color="red", label=f"chosen xmin = {fit.xmin:.4g}")
    if which == "D":
        ax.set_title(f"KS distance vs candidate xmin\n{_label(r)}")
        ax.set_ylabel("KS distance D")
    else:
        ax.set_title(f"α vs candidate xmin\n{_label(r)}")
        ax.set_ylabel("power-law exponent α")
        for level, colour, what in ((2.0, "tab:orange", "over-trained below"),
                                    (6.0, "tab:purple", "under-trained above")):
            ax.axhline(level, color=colour, ls=":", lw=1.2, label=f"α = {level:g} ({what})")
    ax.set_xlabel("candidate xmin (log scale)")
    ax.legend(loc="best")
    return fig


def trap_note(report, key: tuple) -> str:
    """What the traps of one row ``(layer_id, slice_id)`` are: ``outlier dimension 99 (5 layers); 1 isolated``.

    Read from ``report.traps`` (``kind``, ``group``) and ``report.trap_groups``; '' when the row has no trap.
    """
    traps = getattr(report, "traps", None)
    groups = getattr(report, "trap_groups", None)
    if traps is None or len(traps) == 0 or "kind" not in traps.columns:
        return ""
    parts: list[str] = []
    isolated = 0
    for t in traps.to_dict(orient="records"):
        sid = t.get("slice_id")
        if (int(t["layer_id"]), None if sid is None or _isnan(sid) else int(sid)) != tuple(key):
            continue
        try:
            g = int(t.get("group"))  # <NA> / None for traps in no group
        except (TypeError, ValueError):
            g = -1
        if t.get("kind") == "shared_dim" and groups is not None and 0 <= g < len(groups):
            grp = groups.iloc[g]
            text = f"outlier dimension {int(grp['index'])} ({int(grp['num_layers'])} layers)"
            if text not in parts:
                parts.append(text)
        elif t.get("kind") == "isolated":
            isolated += 1
    if isolated:
        parts.append(f"{isolated} isolated")
    return "; ".join(parts)


def overlay_figure(result, note: str = "") -> Any:
    """Original (green) vs randomized (red) ESD on a log10 axis; orange line at max randomized λ.

    ``result`` is a :class:`~htsr.results.LayerResult` of a ``randomize=True`` run; ``note``
    (:func:`trap_note`) names the outlier dimension its traps belong to, as a third title line.
    """
    fig = _new_figure()
    ax = fig.add_subplot()
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
    ax.set_title(f"Original vs randomized ESD{extra}\n{_label(result)}" + (f"\ntraps: {note}" if note else ""))
    ax.set_xlabel("log10 λ")
    ax.set_ylabel("density")
    ax.legend(loc="upper left")
    return fig


def _mp(r, evals: np.ndarray) -> Any:
    from .spectral.marchenko_pastur import mp_density

    fig = _new_figure()
    ax = fig.add_subplot()
    mp = r.mp
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
    ax.set_title(f"Marchenko–Pastur fit of {_label(r)}\nmp_softrank = {mp.mp_softrank:.3g}{sub}")
    ax.set_xlabel("eigenvalue λ of WᵀW")
    ax.set_ylabel("share of eigenvalues per bin")
    ax.legend(loc="upper right")
    return fig


def layer_figures(result, trap_text: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(kind, Figure)`` for one :class:`~htsr.results.LayerResult` (nothing when it has no ESD).

    ``trap_text`` (:func:`trap_note`) is shown on the randomized-ESD figure.
    """
    import matplotlib

    if result.esd is None:
        return
    evals = np.asarray(result.evals, dtype=float)
    fit = result.fit
    with matplotlib.rc_context(_STYLE):  # type: ignore[arg-type]
        yield "esd", _esd_loglog(result, evals, fit)
        yield "esd2", _esd_linlin(result, evals, fit)
        yield "esd3", _esd_log10(result, evals, fit)
        if fit is not None and fit.xmins.size:
            yield "esd4", _curve(result, fit, "D")
            yield "esd5", _curve(result, fit, "alpha")
        if result.randomized is not None:
            yield "randesd", overlay_figure(result, trap_text)
        if result.mp is not None and np.isfinite(result.mp.sigma_mp):
            yield "mpfit", _mp(result, evals)


def overlay_png(result, trap_text: str = "") -> bytes | None:
    """PNG of one layer's original-vs-randomized overlay, or None when the result has no randomized ESD."""
    import matplotlib

    if result.esd is None or result.randomized is None:
        return None
    with matplotlib.rc_context(_STYLE):  # type: ignore[arg-type]
        return figure_png(overlay_figure(result, trap_text))


def _require_matplotlib() -> None:
    from .errors import HtsrError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise HtsrError("plots need matplotlib: pip install 'htsr[plot]'") from None


def _in_notebook() -> bool:
    ipy = sys.modules.get("IPython")
    if ipy is None:
        return False
    try:
        shell = ipy.get_ipython()
    except AttributeError:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def plot_report(report, show: bool = False, savedir: str | Path | None = None) -> list[Path]:
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

    Returns
    -------
    list of Path
        The files written.
    """
    from .files import atomic_write

    _require_matplotlib()
    folder = None
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
    from .option_plots import option_figures  # deltas=True: level-spacing figures

    for result in report.layers:
        figures = itertools.chain(layer_figures(result, trap_note(report, result.key)), option_figures(report, result))
        for kind, fig in figures:
            png = figure_png(fig)
            if display is not None:
                display(png)
            if folder is not None:
                target = folder / safe_filename(result.layer_id, result.name, result.slice_id, kind)
                if target.resolve().parent != root:  # defence in depth; safe_filename has no separators
                    raise ValueError(f"figure path {target} escapes {folder}")
                atomic_write(target, png)
                written.append(target)
    return written
