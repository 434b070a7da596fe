"""The base of every htsr figure: the style, a layer's title line and the (reusable) Agg figure.

:mod:`htsr.plotting` (the per-layer figures) and :mod:`htsr.option_plots` (the
options' figures) both draw on these; neither imports the other's drawing
helpers. matplotlib is imported only inside the functions.
"""

from __future__ import annotations

from typing import Any

STYLE: dict[str, Any] = {"figure.figsize": (7.0, 4.6), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.titley": 1.0, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 8.5,
                         "text.usetex": False}

#: While figures are drawn in bulk (:func:`reuse`), one reusable figure per kind (None: every figure is new).
_REUSE: dict[str, Any] | None = None


def reuse(on: bool) -> None:
    """Start (``True``) or stop reusing one figure per kind in :func:`new_figure` (matplotlib's text cache is
    per renderer, so a reused figure draws its text faster)."""
    global _REUSE
    if on and _REUSE is None:
        _REUSE = {}
    elif not on:
        _REUSE = None


def plain(text: Any, limit: int = 70) -> str:
    """A model string made safe for a matplotlib title: no mathtext (``$`` escaped), bounded length."""
    s = str(text)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("\\", "\\\\").replace("$", r"\$")


def layer_label(r: Any) -> str:
    """``layer 3 slice 1: name`` of a :class:`~htsr.results.LayerResult`."""
    s = "" if r.slice_id is None else f" slice {int(r.slice_id)}"
    return f"layer {int(r.layer_id)}{s}: {plain(r.name, 60)}"


def new_axes(kind: str = "") -> tuple[Any, Any]:
    """A figure with one axes to draw on: new, or while :func:`reuse` is on, the one last used for ``kind``, emptied.

    Emptying keeps the axes and their tick objects (creating an axes and its ticks is about a third of a
    small figure's drawing time), and leaves them as a new figure's: no artists, no legend, empty title
    and labels, linear scales with their default locators, limits (0, 1) with autoscaling on, the colour
    cycle restarted. The picture is the one a new figure gives, byte for byte
    (``tests/test_plotting.py::test_reused_axes_draw_the_pictures_of_new_figures``).
    """
    fig = new_figure(kind)
    if not fig.axes:
        return fig, fig.add_subplot()
    ax = fig.axes[0]
    for artist in [*ax.lines, *ax.patches, *ax.collections, *ax.texts, *ax.images, *ax.artists, *ax.tables]:
        artist.remove()
    if ax.legend_ is not None:
        ax.legend_.remove()
    ax.containers.clear()
    for loc in ("left", "center", "right"):
        ax.set_title("", loc=loc)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_xscale("linear")
    ax.set_yscale("linear")
    ax.relim()
    ax.set_xlim(0.0, 1.0, auto=True)
    ax.set_ylim(0.0, 1.0, auto=True)
    ax.set_prop_cycle(None)
    return fig, ax


def is_reused(fig: Any) -> bool:
    """Whether ``fig`` is one of :func:`reuse`'s figures (kept, not cleared, after rendering)."""
    return _REUSE is not None and any(f is fig for f in _REUSE.values())


def new_figure(kind: str = "") -> Any:
    """A fresh Agg figure; while :func:`reuse` is on, the figure last used for ``kind`` (:func:`new_axes` empties it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = _REUSE.get(kind) if (_REUSE is not None and kind) else None
    if fig is None:
        fig = Figure()
        FigureCanvasAgg(fig)
        if _REUSE is not None and kind:
            _REUSE[kind] = fig
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.11, top=0.86)
    return fig
