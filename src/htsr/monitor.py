"""Watch alpha, correlation traps and weight change while a model trains.

:class:`Monitor` analyzes the model every ``every`` steps (the same
per-layer analysis as :func:`htsr.analyze`, randomized by default so traps
are counted) and appends one JSON line per evaluation to ``path``. The file
is append-only and flushed at once, so a crash loses at most the line being
written; opening a monitor on an existing file continues its history. The
first weights seen (``W0``) are saved beside it (``<path>.w0.npz``) so the
relative weight change ``‖W − W0‖_F / ‖W0‖_F`` survives a restart too.

Flags (events, each recorded once when its condition turns on):

``mean_alpha_below_2``
    the mean alpha over the analyzed layers fell below 2;
``trap``
    a layer that had no correlation trap at the previous evaluation has one;
``alpha_falling_val_rising``
    over the last ``patience`` evaluations the mean alpha fell at every
    evaluation while the caller-supplied validation loss rose at every one.

What these signals do and do not predict is measured in
``docs/overtraining.md``; read it before acting on a flag.
"""

from __future__ import annotations

import json
import math
import os
import time
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import HtsrError, OptionError
from .spectral.powerlaw import OVER_TRAINED  # the alpha threshold, declared once
from .tables import Column, Table

if TYPE_CHECKING:
    import pandas as pd

FLAG_NAMES = ("mean_alpha_below_2", "trap", "alpha_falling_val_rising")
_C = Column
MONITOR = Table("monitor", "The Monitor's history, one row per (step, layer) (Monitor.to_frame).", (
    _C("step", "int", "The training step of the evaluation.", show="cli"),
    _C("layer", "str", "The layer's longname (':slice' for a conv slice).", show="cli"),
    _C("alpha", "float", "alpha of the layer at that step.", show="cli"),
    _C("log_norm", "float", "log_norm of the layer at that step."),
    _C("num_traps", "Int", "Correlation traps of the layer (randomize=True).", show="cli"),
    _C("rand_mean_spike", "object", "The mean's outlier in the randomized ESD (randomize=True)."),
    _C("rel_change", "float", "‖W − W0‖_F / ‖W0‖_F.", show="cli"),
    _C("val_loss", "float", "The validation loss given at that step."),
    _C("mean_alpha", "float", "Mean alpha over the layers at that step."),
))


def _num(v: Any) -> float | None:
    """A JSON-safe float (None for NaN/None)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class Monitor:
    """Track per-layer alpha, traps and relative weight change during training.

    Parameters
    ----------
    every : int or None
        Analyze when ``step % every == 0`` (and at the first call). Default None: a time
        budget instead: the first call is analyzed, and later ones only while the
        monitor's own time stays within ``max_overhead`` of the training time measured
        between calls (so the steps analyzed depend on the machine's speed; give an
        integer for fixed, reproducible steps).
    max_overhead : float
        The budget of ``every=None``: monitor time / training time. Default 0.05.
    randomize : bool
        Also shuffle each matrix to count correlation traps (``num_traps``,
        ``rand_mean_spike``). Default True.
    path : str or path-like, optional
        JSONL history file (append-only). None keeps the history in memory only.
    patience : int
        Evaluations over which alpha must keep falling while the validation loss
        keeps rising before ``alpha_falling_val_rising`` is flagged. Default 3.
    seed : int
        Seed of the shuffles (the same model at the same step gives the same numbers).
    log_to : optional
        Also log every evaluation to a TensorBoard ``SummaryWriter``, a ``wandb`` run or the
        ``mlflow`` module (or a list of them): per-layer and mean alpha, traps, outlier dimensions,
        relative weight change, and each layer's ESD as a histogram (:mod:`htsr.loggers`).
    **options
        Further :func:`htsr.analyze` options (``layers``, ``min_evals`` …). ``workers``
        defaults to 1 here (the analysis runs between training steps; one thread
        analyzes small layers faster than a pool); pass ``workers=0`` for one per core.

    Examples
    --------
    >>> import numpy as np, htsr
    >>> rng = np.random.default_rng(0)
    >>> weights = {"fc.weight": rng.standard_normal((100, 40))}
    >>> monitor = htsr.Monitor(every=1)
    >>> record = monitor.step(weights, 0)
    >>> sorted(record["layers"]["fc"])
    ['alpha', 'log_norm', 'num_traps', 'rand_mean_spike', 'rel_change']
    """

    def __init__(self, every: int | None = None, randomize: bool = True, path: str | os.PathLike | None = None,
                 patience: int = 3, seed: int = 0, max_overhead: float = 0.05, log_to: Any = None,
                 **options: Any) -> None:
        if every is not None and (isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1):
            raise OptionError(f"The 'every' option must be a positive integer or None; got {every!r}.")
        if isinstance(max_overhead, bool) or not isinstance(max_overhead, (int, float)) or not 0 < max_overhead <= 1:
            raise OptionError(f"The 'max_overhead' option must be a number in (0, 1]; got {max_overhead!r}.")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 2:
            raise OptionError(f"The 'patience' option must be an integer of at least 2; got {patience!r}.")
        from .config import AnalysisConfig

        AnalysisConfig.from_kwargs(randomize=randomize, seed=seed, **options)  # a bad option fails now
        from .loggers import make_loggers

        self.loggers = make_loggers(log_to)  # TensorBoard / W&B / MLflow (htsr.loggers)
        self.every = None if every is None else int(every)
        self.max_overhead = float(max_overhead)
        self._clock = time.perf_counter
        self._train_s = 0.0  # time between calls (the caller's training)
        self._monitor_s = 0.0  # time inside step()
        self._last_cost = 0.0  # the last analysis
        self._left_at: float | None = None
        self.randomize = bool(randomize)
        self.patience = int(patience)
        self.seed = seed
        options.setdefault("workers", 1)
        self.options = options
        self.path = Path(path) if path is not None else None
        self.history: list[dict] = []
        self.w0: dict[str, np.ndarray] = {}
        self._calls = 0
        if self.path is not None:
            self._reopen()

    # ------------------------------------------------------------------ files
    @property
    def w0_path(self) -> Path | None:
        """Where the first weights are kept (``<path>.w0.npz``)."""
        return None if self.path is None else self.path.with_name(self.path.name + ".w0.npz")

    def _reopen(self) -> None:
        assert self.path is not None
        if self.path.is_dir():
            raise HtsrError(f"{self.path}: is a folder; the monitor's history must be a file.")
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
            for n, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    if not (isinstance(record, dict) and isinstance(record.get("layers"), dict) and "step" in record):
                        raise HtsrError(f"{self.path}: line {n} is not a monitor record (no 'step' and 'layers').")
                    self.history.append(record)
                except json.JSONDecodeError:
                    if n < len(lines) - 1 or lines[-1] == "":
                        raise HtsrError(f"{self.path}: line {n} is not JSON; not a monitor history.") from None
                    # an unfinished last line (a crash mid-write): dropped, and cut from the file
                    with open(self.path, "r+b") as fh:
                        fh.truncate(len("\n".join(lines[:n - 1]).encode("utf-8")) + (1 if n > 1 else 0))
        w0 = self.w0_path
        if w0 is not None and w0.exists():
            try:
                with np.load(w0, allow_pickle=False) as z:
                    self.w0 = {k: np.array(z[k]) for k in z.files}
            except Exception as exc:  # a damaged file of any kind is reported the same way
                raise HtsrError(f"{w0}: cannot read the saved initial weights ({exc.__class__.__name__}).") from None

    def _append(self, record: dict) -> None:
        self.history.append(record)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _save_w0(self) -> None:
        w0 = self.w0_path
        if w0 is None or w0.exists():
            return
        import zipfile

        w0.parent.mkdir(parents=True, exist_ok=True)
        tmp = w0.with_name(w0.name + ".tmp.npz")
        with zipfile.ZipFile(tmp, "w") as zf:  # any layer name is a valid member (np.savez reserves a few)
            for name, array in self.w0.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, array, allow_pickle=False)
        os.replace(tmp, w0)

    # ------------------------------------------------------------------ step
    def step(self, model: Any, step: int, val_loss: float | None = None, force: bool = False) -> dict | None:
        """Analyze ``model`` if ``step`` is due; return the new record (None when not due).

        Parameters
        ----------
        model
            Anything :func:`htsr.analyze` reads (usually the ``torch.nn.Module`` being trained).
            It is only read.
        step : int
            The training step (or epoch) number; records are kept in call order.
        val_loss : float, optional
            The validation loss at this step, for the ``alpha_falling_val_rising`` flag.
        force : bool
            Analyze even when ``step`` is not a multiple of ``every``.
        """
        start = self._clock()
        self._calls += 1
        if self._left_at is not None:
            self._train_s += start - self._left_at
        first = self._calls == 1 and not self.history
        if self.every is not None:
            due = force or first or int(step) % self.every == 0
        else:
            due = force or first or self._monitor_s + self._last_cost <= self.max_overhead * self._train_s
        if not due:
            self._left_at = self._clock()
            self._monitor_s += self._left_at - start
            return None
        try:
            return self._analyze(model, step, val_loss, start)
        finally:
            self._left_at = self._clock()
            self._monitor_s += self._left_at - start
            self._last_cost = self._left_at - start

    def _analyze(self, model: Any, step: int, val_loss: float | None, start: float) -> dict:
        from .api import analyze
        from .compare import as_float64

        report = analyze(model, randomize=self.randomize, seed=self.seed, **self.options)
        weights = self._weights(model, {r.longname for r in report.layers})
        new_w0 = False
        layers: dict[str, dict] = {}
        for r in report.layers:
            name = r.longname if r.slice_id is None else f"{r.longname}:{int(r.slice_id)}"
            rel = None
            w = weights.get(r.longname)
            try:
                w = None if w is None else as_float64(w, r.longname)
            except HtsrError:
                w = None
            if w is not None:
                if r.longname not in self.w0:
                    self.w0[r.longname] = w.copy()
                    new_w0 = True
                w0 = self.w0[r.longname]
                if w0.shape == w.shape:
                    n0 = float(np.linalg.norm(w0))
                    rel = float(np.linalg.norm(w - w0)) / n0 if n0 > 0 else None
            traps = r.traps if self.randomize else None
            layers[name] = {
                "alpha": _num(None if r.fit is None else r.fit.alpha),
                "log_norm": _num(None if r.metrics is None else r.metrics.log_norm),
                "num_traps": None if traps is None or traps.num_traps is None else int(traps.num_traps),
                "rand_mean_spike": None if traps is None else bool(traps.mean_spike),
                "rel_change": _num(rel),
            }
        if new_w0:
            self._save_w0()
        alphas = [v["alpha"] for v in layers.values() if v["alpha"] is not None]
        record = {
            "step": int(step),
            "time": round(time.time(), 3),
            "val_loss": _num(val_loss),
            "mean_alpha": _num(np.mean(alphas)) if alphas else None,
            "num_traps": sum(v["num_traps"] or 0 for v in layers.values()) if self.randomize else None,
            "layers": layers,
            "elapsed_s": round(self._clock() - start, 4),
        }
        record["flags"] = self._new_flags(record)
        self._append(record)
        if self.loggers:
            from .loggers import log_record

            log_record(self.loggers, record, report)
        return record

    def _weights(self, model: Any, names: set) -> dict[str, np.ndarray]:
        from .sources import open_source

        out = {}
        for t in open_source(model).tensors:
            if t.longname in names and t.longname not in out:
                try:
                    out[t.longname] = t.load()
                except HtsrError:
                    continue
        return out

    def _new_flags(self, record: dict) -> list[str]:
        """The flags that turn on at this record (given the history before it)."""
        flags = []
        prev = self.history[-1] if self.history else None
        active_before = set(prev.get("active", [])) if prev else set()
        active = set()
        if record["mean_alpha"] is not None and record["mean_alpha"] < OVER_TRAINED:
            active.add("mean_alpha_below_2")
        if self.randomize and prev is not None:
            for name, layer in record["layers"].items():
                before = prev["layers"].get(name, {}).get("num_traps")
                if (layer["num_traps"] or 0) > 0 and before == 0:
                    active.add("trap")
        window = [*self.history, record][-self.patience:]
        if len(window) == self.patience:
            a = [_num(r.get("mean_alpha")) for r in window]
            v = [_num(r.get("val_loss")) for r in window]
            fa = [x for x in a if x is not None]
            fv = [x for x in v if x is not None]
            if len(fa) == len(fv) == self.patience and all(x > y for x, y in pairwise(fa)) \
                    and all(x < y for x, y in pairwise(fv)):
                active.add("alpha_falling_val_rising")
        record["active"] = sorted(active)
        for name in FLAG_NAMES:
            if name in active and (name not in active_before or name == "trap"):
                flags.append(name)
        return flags

    # ------------------------------------------------------------------ views
    @property
    def overhead(self) -> float:
        """Time spent in :meth:`step` divided by the time between its calls (NaN before any training)."""
        return self._monitor_s / self._train_s if self._train_s > 0 else float("nan")

    @property
    def flags(self) -> list[tuple[int, str]]:
        """Every flag raised so far, as ``(step, name)`` in order."""
        return [(r["step"], f) for r in self.history for f in r.get("flags", [])]

    def to_frame(self) -> pd.DataFrame:
        """The history as a long DataFrame: one row per (step, layer).

        Columns ``step, layer, alpha, log_norm, num_traps, rand_mean_spike, rel_change,
        val_loss, mean_alpha``.
        """
        rows = [{"step": r["step"], "layer": name, **layer, "val_loss": r.get("val_loss"),
                 "mean_alpha": r.get("mean_alpha")} for r in self.history for name, layer in r["layers"].items()]
        return MONITOR.frame(rows)

    def plot(self) -> Any:
        """A matplotlib Figure: alpha per layer, relative weight change, traps and validation loss over steps."""
        from .monitor_views import plot_history

        return plot_history(self.history)

    def to_html(self, path: str | os.PathLike | None = None) -> str:
        """A self-contained HTML page of alpha per layer over time (and the flags); written to ``path`` when given."""
        from .monitor_views import render_html

        text = render_html(self.history)
        if path is not None:
            from .files import atomic_write

            atomic_write(path, text)
        return text

    # ------------------------------------------------------------------ trainers
    def huggingface_callback(self) -> Any:
        """A ``transformers.TrainerCallback`` that calls :meth:`step` (pass it to ``Trainer(callbacks=[...])``).

        The latest ``eval_loss`` reported by the trainer is passed on as ``val_loss``.
        """
        try:
            from transformers import TrainerCallback
        except ImportError as exc:
            raise HtsrError("Monitor.huggingface_callback needs the 'transformers' package.") from exc
        from .monitor_views import make_hf_callback

        return make_hf_callback(self, TrainerCallback)

    def lightning_callback(self) -> Any:
        """A Lightning ``Callback`` that calls :meth:`step` after each training batch.

        ``val_loss`` is read from ``trainer.callback_metrics['val_loss']`` after each validation.
        """
        base = None
        for mod in ("lightning.pytorch", "pytorch_lightning"):
            try:
                base = __import__(mod, fromlist=["Callback"]).Callback
                break
            except ImportError:
                continue
        if base is None:
            raise HtsrError("Monitor.lightning_callback needs the 'lightning' (or 'pytorch_lightning') package.")
        from .monitor_views import make_lightning_callback

        return make_lightning_callback(self, base)
