"""Figures, the HTML page and trainer callbacks of :class:`htsr.Monitor` (imported on demand)."""

from __future__ import annotations

import base64
import io
from typing import Any

from .spectral.powerlaw import OVER_TRAINED  # the alpha threshold, declared once


def _series(history: list[dict]) -> tuple[list[int], dict[str, dict[str, list]]]:
    steps = [r["step"] for r in history]
    names: list[str] = []
    for r in history:
        for n in r["layers"]:
            if n not in names:
                names.append(n)
    out: dict[str, dict[str, list]] = {}
    for n in names:
        out[n] = {k: [r["layers"].get(n, {}).get(k) for r in history]
                  for k in ("alpha", "num_traps", "rel_change")}
    return steps, out


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def plot_history(history: list[dict]) -> Any:
    """Four panels over steps: alpha per layer (and mean), relative weight change, traps, validation loss."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    steps, layers = _series(history)
    fig = Figure(figsize=(10, 7), layout="constrained")
    ax = fig.subplots(2, 2, sharex=True)
    for name, s in layers.items():
        ax[0, 0].plot(steps, [_f(v) for v in s["alpha"]], marker=".", lw=1, label=name)
        ax[0, 1].plot(steps, [_f(v) for v in s["rel_change"]], marker=".", lw=1, label=name)
    ax[0, 0].plot(steps, [_f(r.get("mean_alpha")) for r in history], color="k", lw=2, label="mean")
    ax[0, 0].axhline(OVER_TRAINED, color="r", ls="--", lw=0.8)
    ax[0, 0].set_ylabel("alpha")
    ax[0, 1].set_ylabel("‖W − W0‖ / ‖W0‖")
    counts = [_f(r.get("num_traps")) for r in history]
    if any(c > 0 for c in counts if c == c):
        ax[1, 0].step(steps, counts, where="post", color="tab:red")
        ax[1, 0].set_ylim(bottom=0)
        ax[1, 0].yaxis.set_major_locator(MaxNLocator(integer=True))
    else:  # no flat line on a ±0.04 axis: say it
        ax[1, 0].text(0.5, 0.5, "no correlation trap at any step" if any(c == 0 for c in counts) else
                      "traps are counted with randomize=True", transform=ax[1, 0].transAxes, ha="center",
                      va="center", color="0.4")
        ax[1, 0].set_yticks([])
    ax[1, 0].set_ylabel("correlation traps (all layers)")
    ax[1, 1].plot(steps, [_f(r.get("val_loss")) for r in history], marker=".", color="tab:green")
    ax[1, 1].set_ylabel("validation loss")
    for a in ax[1]:
        a.set_xlabel("step")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    for r in history:
        for flag in r.get("flags", []):
            ax[0, 0].axvline(r["step"], color="tab:orange", lw=0.8, alpha=0.6)
            ax[0, 0].annotate(flag, (r["step"], 1.0), xycoords=("data", "axes fraction"), rotation=90,
                              fontsize=7, va="top", ha="right")
    if len(layers) <= 12:
        ax[0, 0].legend(fontsize=7)
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _alpha_svg(steps: list[int], layers: dict[str, dict[str, list]], history: list[dict]) -> str:
    from . import pages

    palette = ("#4477aa", "#66ccee", "#228833", "#ccbb44", "#ee6677", "#aa3377", "#bbbbbb", "#332288")
    series = [pages.Series(name if len(layers) <= 8 else "", s["alpha"], colour=palette[i % len(palette)],
                           tips=[f"step {st}, {name}: alpha {a:.3f}" if a is not None else "" for st, a in
                                 zip(steps, s["alpha"])])
              for i, (name, s) in enumerate(layers.items())]
    series.append(pages.Series("mean alpha", [r.get("mean_alpha") for r in history], colour="#000000"))
    spec = pages.Chart(x_label="step", y_label="alpha", x_ticks=[str(int(s)) for s in steps], bands=pages.ALPHA_BANDS,
                       y_max=8.0 if all((r.get("mean_alpha") or 0) < 8 for r in history) else None, y_cap=20.0)
    return pages.chart(series, spec)


def _traps_svg(steps: list[int], history: list[dict]) -> str:
    """The traps over steps; a sentence instead of a flat line when no step has one."""
    from . import pages

    counts = [r.get("num_traps") for r in history]
    if not any(counts):
        return ('<p class="note">' + ("No correlation trap at any step." if any(c == 0 for c in counts) else
                                      "Traps are counted with randomize=True (the default).") + "</p>")
    spec = pages.Chart(x_label="step", y_label="correlation traps", x_ticks=[str(int(s)) for s in steps],
                       height=220, y_max=max(c or 0 for c in counts) + 1)
    return pages.chart([pages.Series("traps, all layers", counts, colour="#b00020")], spec)


def render_html(history: list[dict]) -> str:
    """One self-contained page: alpha and traps over steps, the flags, the figure, and alpha per layer per step."""
    from . import pages

    steps, layers = _series(history)
    try:
        img = f'<figure><img alt="alpha over training" src="data:image/png;base64,{_png(plot_history(history))}">' \
              "</figure>"
    except ImportError:
        img = "<p>(matplotlib is not installed: no figure)</p>"
    flags = [(r["step"], f) for r in history for f in r.get("flags", [])]
    flag_html = pages.table(["step", "flag"], flags, text_columns=[1]) if flags else "<p>None.</p>"
    names = list(layers)
    rows = []
    for i, s in enumerate(steps):
        cells: list = [int(s), history[i].get("mean_alpha"), history[i].get("val_loss")]
        for v in layers.values():
            a, t = v["alpha"][i], v["num_traps"][i]
            text = "" if a is None else f"{a:.3f}"
            if t:
                text += f" ({t} trap{'s' if t > 1 else ''})"
            cells.append(pages.Markup(pages.esc(text)))
        rows.append(cells)
    table = pages.table(["step", "mean alpha", "val loss", *names], rows, sortable=True)
    sections = [
        pages.Section("alpha", "Alpha over training", _alpha_svg(steps, layers, history)),
        pages.Section("traps", "Correlation traps over training", _traps_svg(steps, history)),
        pages.Section("flags", "Flags", flag_html + '<p class="note">What the flags do and do not predict: see '
                      "the project's docs/overtraining.md.</p>"),
        pages.Section("figure", "All panels", img),
        pages.Section("layers", "Alpha per layer and step", f'<div class="scroll">{table}</div>'),
    ]
    return pages.page("htsr monitor", f"{len(history)} evaluations", sections)


def make_hf_callback(monitor: Any, base: type) -> Any:
    """An instance of a ``base`` (``transformers.TrainerCallback``) subclass driving ``monitor``."""

    class HtsrMonitorCallback(base):
        def __init__(self) -> None:
            self.monitor = monitor
            self.val_loss: float | None = None

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
            if metrics and "eval_loss" in metrics:
                self.val_loss = float(metrics["eval_loss"])

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            from .loggers import attach_trainer_tensorboard  # report_to=["tensorboard"]: the same run

            self.writer = attach_trainer_tensorboard(self.monitor, args)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if getattr(self, "writer", None) is not None:
                self.monitor.loggers = [x for x in self.monitor.loggers if getattr(x, "writer", None) is not self.writer]
                self.writer.close()

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if model is not None:
                self.monitor.step(model, int(state.global_step), val_loss=self.val_loss)

    return HtsrMonitorCallback()


def make_lightning_callback(monitor: Any, base: type) -> Any:
    """An instance of a ``base`` (Lightning ``Callback``) subclass driving ``monitor``."""

    class HtsrMonitorLightning(base):
        def __init__(self) -> None:
            super().__init__()
            self.monitor = monitor
            self.val_loss: float | None = None

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            value = getattr(trainer, "callback_metrics", {}).get("val_loss")
            if value is not None:
                self.val_loss = float(value)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.monitor.step(pl_module, int(trainer.global_step), val_loss=self.val_loss)

    return HtsrMonitorLightning()
