"""Per-layer learning rates from alpha during training (TempBalance).

:class:`TempBalance` follows Zhou et al. (NeurIPS 2023): every so often the
model is analyzed (through a :class:`htsr.Monitor`, the same analysis and the
same time budget) and each layer's learning rate becomes the base schedule's
current rate times a factor mapped linearly from the layer's alpha: the lowest
alpha gets ``lr_min_ratio``, the highest ``lr_min_ratio + lr_slope``. A higher
alpha (a less well-trained layer) trains faster.

The factor is applied only inside ``optimizer.step()`` (a pre-hook multiplies
each parameter group's ``lr``, a post-hook restores it), so any
``torch.optim.lr_scheduler`` keeps reading and writing the base rate and the two
compose. What it did on models measured here is in ``docs/acting.md``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import HtsrError, OptionError

__all__ = ["TempBalance"]


def _layer_of(name: str) -> str:
    """The layer name of a Monitor record key (``name`` or ``name:slice``)."""
    head, _, tail = name.rpartition(":")
    return head if head and tail.isdigit() else name


class TempBalance:
    """Scale each layer's learning rate by its alpha (TempBalance).

    Create it right after the optimizer and before any learning-rate scheduler; call
    :meth:`step` once per training step or per epoch (after ``optimizer.step()`` and
    the scheduler's step).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        With one parameter group (a plain optimizer) it is rebuilt with one group per
        analyzed layer: each layer's weight, its bias, and the parameters of the
        modules that follow it in registration order (norms) up to the next analyzed
        layer; parameters before the first analyzed layer join that layer. With several
        groups, each group follows the analyzed layer its parameters belong to (a group
        spanning several analyzed layers is refused) and a group with none keeps the
        base rate. Optimizer state (momentum, Adam moments) is kept.
    model : torch.nn.Module
        The model being trained (only read).
    lr_min_ratio : float
        The factor of the lowest-alpha layer (default 0.5).
    lr_slope : float
        The highest-alpha layer gets ``lr_min_ratio + lr_slope`` (default 1.0). When all
        alphas are equal (or a layer's alpha is missing) the factor is the midpoint.
    every : int or None
        Analyze at calls whose ``step`` is a multiple of ``every`` (and at the first
        call). None (default): the Monitor's time budget, ``max_overhead`` of the time
        between calls.
    max_overhead : float
        The budget of ``every=None`` (default 0.05).
    monitor : htsr.Monitor, optional
        Share this monitor's analyses instead of analyzing: :meth:`step` uses its newest
        record (the caller calls ``monitor.step``). ``every``, ``max_overhead`` and
        ``options`` then do not apply.
    path : str or path-like, optional
        Append-only JSONL history of the factors (one line per update).
    **options
        Further :func:`htsr.analyze` options for the analysis (``layers=`` …).

    Examples
    --------
    >>> import torch, htsr                                   # doctest: +SKIP
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # doctest: +SKIP
    >>> tb = htsr.TempBalance(opt, model, every=1)            # doctest: +SKIP
    >>> sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)  # doctest: +SKIP
    >>> for epoch in range(100):                              # doctest: +SKIP
    ...     train_one_epoch(model, opt); sched.step(); tb.step(epoch)
    """

    def __init__(self, optimizer: Any, model: Any, lr_min_ratio: float = 0.5, lr_slope: float = 1.0,
                 every: int | None = None, max_overhead: float = 0.05, monitor: Any = None,
                 path: str | os.PathLike | None = None, **options: Any) -> None:
        import torch

        from .api import describe
        from .monitor import Monitor

        for label, v, lo in (("lr_min_ratio", lr_min_ratio, 0.0), ("lr_slope", lr_slope, 0.0)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo \
                    or (label == "lr_min_ratio" and v == 0):
                raise OptionError(f"The '{label}' option must be a {'positive' if label == 'lr_min_ratio' else 'non-negative'}"
                                  f" number; got {v!r}.")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise OptionError(f"TempBalance needs a torch.optim.Optimizer; got {optimizer.__class__.__name__}.")
        if not isinstance(model, torch.nn.Module):
            raise OptionError(f"TempBalance needs a torch.nn.Module; got {model.__class__.__name__}.")
        self.lr_min_ratio, self.lr_slope = float(lr_min_ratio), float(lr_slope)
        if monitor is not None:
            if not isinstance(monitor, Monitor):
                raise OptionError(f"monitor= must be an htsr.Monitor; got {monitor.__class__.__name__}.")
            if options:
                raise OptionError("TempBalance: with monitor= the analysis options are the monitor's; "
                                  f"drop {', '.join(sorted(options))}.")
            self.monitor, self._own = monitor, False
        else:
            self.monitor, self._own = Monitor(every=every, randomize=False, max_overhead=max_overhead,
                                              **options), True
        desc = describe(model, **{k: v for k, v in options.items() if k not in ("workers", "seed")})
        layers = [str(n) for n in desc.loc[desc["analyzed"].astype(bool), "longname"]]
        layers = list(dict.fromkeys(layers))
        if not layers:
            raise HtsrError("TempBalance: the model has no analyzable layer.")
        self.layers = layers
        self.model = model
        self.optimizer = optimizer
        self.group_layers = self._build_groups(optimizer, model, set(layers))
        self.factors = [1.0] * len(optimizer.param_groups)
        self.history: list[dict] = []
        self.path = Path(path) if path is not None else None
        self._used_step: Any = None
        self._base: list[Any] = []
        self._hooks = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    # ------------------------------------------------------------------ groups
    @staticmethod
    def _owner_layers(model: Any, layers: set[str]) -> dict[int, str]:
        """id(param) -> the analyzed layer whose rate it follows."""
        owner: dict[int, str] = {}
        pending: list[int] = []
        current: str | None = None
        for name, p in model.named_parameters():
            module = name.rpartition(".")[0]
            if module in layers:
                current = module
                for q in pending:
                    owner[q] = current
                pending = []
            if current is None:
                pending.append(id(p))
            else:
                owner[id(p)] = current
        return owner

    def _build_groups(self, optimizer: Any, model: Any, layers: set[str]) -> list[str | None]:
        owner = self._owner_layers(model, layers)
        groups = optimizer.param_groups
        if len(groups) == 1:
            if "initial_lr" in groups[0]:
                raise OptionError("TempBalance: create it before the learning-rate scheduler (it rebuilds the "
                                  "optimizer's parameter groups, which the scheduler has already read).")
            base = {k: v for k, v in groups[0].items() if k != "params"}
            by_layer: dict[str | None, list] = {}
            for p in groups[0]["params"]:
                by_layer.setdefault(owner.get(id(p)), []).append(p)
            optimizer.param_groups.clear()
            out: list[str | None] = []
            for layer in [*(k for k in by_layer if k is not None), None]:
                if layer in by_layer:
                    optimizer.add_param_group({**base, "params": by_layer[layer]})
                    out.append(layer)
            return out
        out = []
        for i, g in enumerate(groups):
            found = {owner[id(p)] for p in g["params"] if id(p) in owner}
            if len(found) > 1:
                raise OptionError(f"TempBalance: parameter group {i} holds parameters of {len(found)} analyzed layers "
                                  f"({', '.join(sorted(found)[:3])} …); give a plain optimizer or one group per layer.")
            out.append(found.pop() if found else None)
        return out

    # ------------------------------------------------------------------ hooks
    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._base = [g["lr"] for g in optimizer.param_groups]
        for g, f in zip(optimizer.param_groups, self.factors, strict=False):
            g["lr"] = g["lr"] * f

    def _post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        for g, base in zip(optimizer.param_groups, self._base, strict=False):
            g["lr"] = base
        self._base = []

    def remove(self) -> None:
        """Detach from the optimizer (its groups keep the base rate from then on)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def lrs(self) -> list[float]:
        """The learning rate each parameter group trains with now (base × factor)."""
        return [float(g["lr"]) * f for g, f in zip(self.optimizer.param_groups, self.factors, strict=True)]

    # ------------------------------------------------------------------ step
    def step(self, step: int, val_loss: float | None = None, force: bool = False) -> dict | None:
        """Re-analyze if due and reset the factors; return the new history record (None when not due).

        Parameters
        ----------
        step : int
            The training step or epoch number.
        val_loss : float, optional
            Passed to the owned Monitor (its flags).
        force : bool
            Analyze now whatever the schedule.
        """
        if self._own:
            record = self.monitor.step(self.model, step, val_loss=val_loss, force=force)
        else:
            newest = self.monitor.history[-1] if self.monitor.history else None
            record = newest if newest is not None and (self._used_step is None or newest is not self._used_step) \
                else None
        if record is None:
            return None
        self._used_step = record
        alphas: dict[str, list[float]] = {}
        for key, row in record["layers"].items():
            a = row.get("alpha")
            if a is not None and math.isfinite(a):
                alphas.setdefault(_layer_of(key), []).append(float(a))
        alpha = {k: sum(v) / len(v) for k, v in alphas.items()}
        used = [alpha[name] for name in self.group_layers if name is not None and name in alpha]
        lo, hi = (min(used), max(used)) if used else (0.0, 0.0)
        mid = self.lr_min_ratio + self.lr_slope / 2
        factors = []
        for name in self.group_layers:
            if name is None:
                factors.append(1.0)
            elif name not in alpha or hi == lo:
                factors.append(mid)
            else:
                factors.append(self.lr_min_ratio + self.lr_slope * (alpha[name] - lo) / (hi - lo))
        self.factors = factors
        out = {"step": int(step), "base_lr": [float(g["lr"]) for g in self.optimizer.param_groups],
               "layers": {name: {"alpha": alpha.get(name), "factor": f}
                          for name, f in zip(self.group_layers, factors, strict=True) if name is not None}}
        self.history.append(out)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(out, allow_nan=False) + "\n")
        return out
