"""Figures, the HTML page and trainer callbacks of :class:`htsr.Monitor` (imported on demand)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any


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


def plot_history(history: list[dict]):
    """Four panels over steps: alpha per layer (and mean), relative weight change, traps, validation loss."""
    from matplotlib.figure import Figure

    steps, layers = _series(history)
    fig = Figure(figsize=(10, 7), layout="constrained")
    ax = fig.subplots(2, 2, sharex=True)
    for name, s in layers.items():
        ax[0, 0].plot(steps, [_f(v) for v in s["alpha"]], marker=".", lw=1, label=name)
        ax[0, 1].plot(steps, [_f(v) for v in s["rel_change"]], marker=".", lw=1, label=name)
    ax[0, 0].plot(steps, [_f(r.get("mean_alpha")) for r in history], color="k", lw=2, label="mean")
    ax[0, 0].axhline(2.0, color="r", ls="--", lw=0.8)
    ax[0, 0].set_ylabel("alpha")
    ax[0, 1].set_ylabel("‖W − W0‖ / ‖W0‖")
    ax[1, 0].step(steps, [_f(r.get("num_traps")) for r in history], where="post", color="tab:red")
    ax[1, 0].set_ylabel("correlation traps (all layers)")
    ax[1, 1].plot(steps, [_f(r.get("val_loss")) for r in history], marker=".", color="tab:green")
    ax[1, 1].set_ylabel("validation loss")
    for a in ax[1]:
        a.set_xlabel("step")
    for r in history:
        for flag in r.get("flags", []):
            ax[0, 0].axvline(r["step"], color="tab:orange", lw=0.8, alpha=0.6)
            ax[0, 0].annotate(flag, (r["step"], 1.0), xycoords=("data", "axes fraction"), rotation=90,
                              fontsize=7, va="top", ha="right")
    if len(layers) <= 12:
        ax[0, 0].legend(fontsize=7)
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_html(history: list[dict]) -> str:
    """One self-contained page: the figure (when matplotlib is installed), the flags, and alpha per layer per step."""
    e = html.escape
    steps, layers = _series(history)
    try:
        img = f'<img alt="alpha over training" src="data:image/png;base64,{_png(plot_history(history))}">'
    except ImportError:
        img = "<p>(matplotlib is not installed: no figure)</p>"
    flags = [(r["step"], f) for r in history for f in r.get("flags", [])]
    flag_rows = "".join(f"<tr><td>{s}</td><td>{e(f)}</td></tr>" for s, f in flags) or \
        '<tr><td colspan="2">none</td></tr>'
    head = "".join(f"<th>{e(n)}</th>" for n in layers)
    body = []
    for i, s in enumerate(steps):
        cells = "".join(
            "<td>" + ("" if v["alpha"][i] is None else f"{v['alpha'][i]:.3f}")
            + ("" if not v["num_traps"][i] else f" ({v['num_traps'][i]} trap{'s' if v['num_traps'][i] > 1 else ''})")
            + "</td>" for v in layers.values())
        mean = history[i].get("mean_alpha")
        val = history[i].get("val_loss")
        body.append(f"<tr><td>{s}</td><td>{'' if mean is None else f'{mean:.3f}'}</td>"
                    f"<td>{'' if val is None else f'{val:.4g}'}</td>{cells}</tr>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>htsr monitor</title>"
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
        f"<h1>htsr monitor</h1><p>{len(history)} evaluations.</p>{img}"
        f"<h2>Flags</h2><table><tr><th>step</th><th>flag</th></tr>{flag_rows}</table>"
        "<p>What the flags do and do not predict: see the project's docs/overtraining.md.</p>"
        f"<h2>Alpha per layer</h2><table><tr><th>step</th><th>mean alpha</th><th>val loss</th>{head}</tr>"
        + "".join(body) + "</table></body></html>"
    )


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
