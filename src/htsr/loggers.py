"""Monitor records into the tools users already watch: TensorBoard, Weights & Biases, MLflow.

``htsr.Monitor(..., log_to=...)`` takes one of these (or a list of them):

- a TensorBoard ``SummaryWriter`` (``torch.utils.tensorboard`` or ``tensorboardX``: anything with
  ``add_scalar`` and ``add_histogram``);
- a ``wandb`` run (``wandb.init(...)``);
- the ``mlflow`` module (logs into its active run, started if none is).

At every evaluation each logs, at the monitor's step, the scalars ``htsr/mean_alpha``,
``htsr/mean_rel_change``, and with ``randomize=True`` ``htsr/num_traps``, ``htsr/num_outlier_dims``,
``htsr/num_isolated_traps``; per layer ``htsr/layer_alpha/<layer>``, ``htsr/layer_rel_change/<layer>``,
``htsr/layer_num_traps/<layer>``; and each layer's ESD (log10 of its eigenvalues) as a histogram
``htsr/layer_log10_esd/<layer>`` where the tool has one (TensorBoard, W&B; MLflow has no histogram).
Each goes through its own library, which the caller has already imported; htsr imports none of
them (W&B's ``Histogram`` is taken from the ``wandb`` module already loaded).
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import numpy as np

from .errors import OptionError

PREFIX = "htsr"


def _scalars(record: dict, report: Any) -> dict[str, float]:
    """Every scalar of one evaluation, ``{name: value}`` (None and NaN left out)."""
    out: dict[str, Any] = {f"{PREFIX}/mean_alpha": record.get("mean_alpha")}
    layers = record.get("layers", {})
    changes = [v["rel_change"] for v in layers.values() if v.get("rel_change") is not None]
    out[f"{PREFIX}/mean_rel_change"] = float(np.mean(changes)) if changes else None
    if record.get("num_traps") is not None:
        out[f"{PREFIX}/num_traps"] = record["num_traps"]
        summary = getattr(report, "summary", None) or {}
        for key in ("num_outlier_dims", "num_isolated_traps"):
            if key in summary:
                out[f"{PREFIX}/{key}"] = summary[key]
    for name, layer in layers.items():
        for key in ("alpha", "rel_change", "num_traps"):
            out[f"{PREFIX}/layer_{key}/{name}"] = layer.get(key)
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def _histograms(record: dict, report: Any) -> dict[str, np.ndarray]:
    """log10 of each layer's eigenvalues (> 0), keyed as the record's layers are."""
    out = {}
    for r in getattr(report, "layers", ()):
        evals = r.evals
        if evals is None:
            continue
        name = r.longname if r.slice_id is None else f"{r.longname}:{r.slice_id}"
        if name in record.get("layers", {}):
            positive = evals[evals > 0]
            if positive.size:
                out[f"{PREFIX}/layer_log10_esd/{name}"] = np.log10(positive)
    return out


class TensorBoardLogger:
    """Scalars with ``add_scalar``, ESDs with ``add_histogram``, on a ``SummaryWriter``."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def log(self, record: dict, report: Any) -> None:
        step = int(record["step"])
        for name, value in _scalars(record, report).items():
            self.writer.add_scalar(name, value, step)
        for name, values in _histograms(record, report).items():
            self.writer.add_histogram(name, values, step)
        self.writer.flush()


class WandbLogger:
    """One ``run.log({...}, step=step)`` per evaluation; ESDs as ``wandb.Histogram``."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, record: dict, report: Any) -> None:
        data: dict[str, Any] = dict(_scalars(record, report))
        wandb = sys.modules.get("wandb")
        if wandb is not None and hasattr(wandb, "Histogram"):
            for name, values in _histograms(record, report).items():
                data[name] = wandb.Histogram(values)
        self.run.log(data, step=int(record["step"]))


_MLFLOW_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


class MlflowLogger:
    """``mlflow.log_metrics`` into the active run (one is started if none is); no histograms."""

    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow

    def log(self, record: dict, report: Any) -> None:
        if self.mlflow.active_run() is None:
            self.mlflow.start_run()
        metrics = {_MLFLOW_BAD.sub("_", k): v for k, v in _scalars(record, report).items()}
        self.mlflow.log_metrics(metrics, step=int(record["step"]))


def make_loggers(log_to: Any) -> list:
    """The adapters for ``log_to`` (None, one target or a list of them); a bad target fails at once.

    Examples
    --------
    >>> make_loggers(None)
    []
    """
    if log_to is None:
        return []
    targets = list(log_to) if isinstance(log_to, (list, tuple)) else [log_to]
    out: list[Any] = []
    for target in targets:
        module = type(target).__module__ or ""
        if target is sys.modules.get("mlflow") or getattr(target, "__name__", None) == "mlflow":
            out.append(MlflowLogger(target))
        elif module.split(".")[0] == "wandb" and callable(getattr(target, "log", None)):
            out.append(WandbLogger(target))
        elif callable(getattr(target, "add_scalar", None)) and callable(getattr(target, "add_histogram", None)):
            out.append(TensorBoardLogger(target))
        else:
            raise OptionError("The 'log_to' option must be a TensorBoard SummaryWriter, a wandb run, the mlflow "
                              f"module, or a list of them; got {type(target).__name__}.")
    return out


def log_record(loggers: list, record: dict, report: Any) -> None:
    """Send one monitor record (and its report's ESDs) to every logger."""
    for logger in loggers:
        logger.log(record, report)


def tensorboard_run_dir(output_dir: str, env_dir: str | None = None) -> str | None:
    """The folder the Hugging Face Trainer's TensorBoard callback writes to (its ``TENSORBOARD_LOGGING_DIR``,
    else the newest ``<output_dir>/runs/*`` holding an event file), or None before it wrote one."""
    import os
    from pathlib import Path

    if env_dir:
        return os.path.expanduser(env_dir)
    runs = [p for p in Path(output_dir).glob("runs/*") if p.is_dir() and any(p.glob("events.out.tfevents.*"))]
    return str(max(runs, key=lambda p: p.stat().st_mtime)) if runs else None


def attach_trainer_tensorboard(monitor: Any, args: Any) -> Any:
    """With a Trainer's ``report_to`` naming TensorBoard, a ``SummaryWriter`` on the Trainer's TensorBoard run
    folder is added to ``monitor``'s loggers, so htsr's scalars land in the same run; returns it (None otherwise,
    or when the monitor already logs to TensorBoard)."""
    import os

    report_to = getattr(args, "report_to", None) or []
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    if not any(r in ("tensorboard", "all") for r in report_to):
        return None
    if any(isinstance(logger, TensorBoardLogger) for logger in monitor.loggers):
        return None
    folder = tensorboard_run_dir(str(args.output_dir), os.getenv("TENSORBOARD_LOGGING_DIR"))
    if folder is None:
        return None
    import importlib

    try:
        module = importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        module = importlib.import_module("tensorboardX")
    writer = module.SummaryWriter(log_dir=folder)
    monitor.loggers.append(TensorBoardLogger(writer))
    return writer
