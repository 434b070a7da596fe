"""Fine-tuning deltas and LoRA adapters, as sources that wrap other sources.

* :func:`delta_source` — ``W − W_base`` for every layer of a fine-tuned model
  whose key (``layers.0.weight``) or, failing that, long name is found in the
  base model with the same shape. Layers without a match stay listed, with the
  reason (they appear in ``Report.skipped``); rows keep the fine-tuned model's
  ids and names.
* :func:`lora_source` — a PEFT LoRA adapter folder (``adapter_config.json`` +
  ``adapter_model.safetensors`` or ``.bin``): per target module the update
  ``ΔW = s·B·A`` with ``s = lora_alpha / r`` (``lora_alpha / √r`` under
  ``use_rslora``; ``rank_pattern`` / ``alpha_pattern`` honoured by module-name
  suffix), transposed for ``fan_in_fan_out`` modules (GPT-2's Conv1D). Rows are
  named ``<module>.lora_BA``; with a base checkpoint each module also gets
  ``<module>.lora_W_plus_AB`` = ``W + ΔW``, the merged weight.

Nothing is computed until the engine reads a row; the two operands are read
one layer at a time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LayerType
from ..errors import LayerError, SourceError
from .base import WeightTensor, natural_key

ADAPTER_CONFIG = "adapter_config.json"
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def _by_key(tensors: tuple[WeightTensor, ...]) -> tuple[dict[str, WeightTensor], dict[str, WeightTensor]]:
    return {t.key: t for t in tensors}, {t.longname: t for t in tensors}


def _difference(a: Callable[[], np.ndarray], b: Callable[[], np.ndarray], where: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        x, y = np.asarray(a()), np.asarray(b())
        if x.shape != y.shape:
            raise LayerError(f"invalid: {where}: shape {x.shape} differs from the base's {y.shape}")
        out = np.subtract(x, y, dtype=np.result_type(x.dtype, y.dtype, np.float32))
        out.flags.writeable = False
        return out

    return load


def delta_source(model: Any, base: Any) -> Any:
    """A source whose rows are ``W − W_base`` (see the module docstring).

    Parameters
    ----------
    model, base
        Anything :func:`htsr.sources.open_source` reads (modules, state dicts,
        paths, other sources); the keys are matched, not the kinds.
    """
    from . import Source, open_source

    src, ref = open_source(model), open_source(base)
    by_key, by_long = _by_key(ref.tensors)
    out = []
    for t in src.tensors:
        b = by_key.get(t.key) or by_long.get(t.longname)
        if t.note:
            out.append(t)
        elif b is None:
            out.append(dataclasses.replace(t, note=f"no layer of the base model has key {t.key!r}"))
        elif b.shape != t.shape:
            out.append(dataclasses.replace(t, note=f"the base model's {b.key!r} has shape {b.shape}, not {t.shape}"))
        else:
            out.append(dataclasses.replace(t, load=_difference(t.load, b.load, t.where)))
    return Source(f"{src.description} minus base {ref.description}", tuple(out), src.kind)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    r: int
    alpha: float
    rslora: bool
    fan_in_fan_out: bool
    rank_pattern: dict
    alpha_pattern: dict

    def scale(self, module: str) -> float:
        r = next((int(v) for k, v in self.rank_pattern.items() if module == k or module.endswith("." + k)), self.r)
        alpha = next((float(v) for k, v in self.alpha_pattern.items() if module == k or module.endswith("." + k)),
                     self.alpha)
        if r <= 0:
            raise SourceError(f"adapter rank r={r} for {module} is not positive.")
        return alpha / math.sqrt(r) if self.rslora else alpha / r


def read_lora_config(folder: Path) -> LoraConfig:
    path = folder / ADAPTER_CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(cfg, dict):
            raise TypeError
        peft_type = str(cfg.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise SourceError(f"{path}: adapter type {peft_type} is not LoRA; htsr reads LoRA adapters only.")
        return LoraConfig(r=int(cfg["r"]), alpha=float(cfg["lora_alpha"] if "lora_alpha" in cfg else cfg["r"]),
                          rslora=bool(cfg.get("use_rslora", False)),
                          fan_in_fan_out=bool(cfg.get("fan_in_fan_out", False)),
                          rank_pattern=dict(cfg.get("rank_pattern") or {}),
                          alpha_pattern=dict(cfg.get("alpha_pattern") or {}))
    except SourceError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SourceError(f"{path}: not a valid LoRA adapter config ({exc.__class__.__name__}: {str(exc)[:150]}).") from None


def _module_name(module: str) -> str:
    return module.removeprefix("base_model.model.")


def lora_source(folder: str | Path, base: Any = None) -> Any:
    """Rows ``ΔW = s·B·A`` of a LoRA adapter folder, and ``W + ΔW`` when ``base`` is given.

    Raises
    ------
    SourceError
        No ``adapter_config.json`` / adapter weights, an A without its B, or
        A and B whose shapes do not chain.
    """
    from . import Source, open_source

    folder = Path(folder)
    cfg = read_lora_config(folder)
    weights = next((folder / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (folder / n).is_file()), None)
    if weights is None:
        raise SourceError(f"{folder}: no adapter_model.safetensors or adapter_model.bin next to {ADAPTER_CONFIG}.")
    tensors = open_source(weights).tensors
    pairs: dict[str, dict[str, WeightTensor]] = {}
    for t in tensors:
        m = _LORA_KEY.match(t.key)
        if m:
            pairs.setdefault(m.group("module"), {})[m.group("which")] = t
    if not pairs:
        raise SourceError(f"{weights}: holds no lora_A / lora_B weights.")
    base_src = open_source(base) if base is not None else None
    base_key, base_long = _by_key(base_src.tensors) if base_src is not None else ({}, {})
    out: list[WeightTensor] = []
    layer_id = 0
    for module in sorted(pairs, key=natural_key):
        pair = pairs[module]
        if set(pair) != {"A", "B"}:
            raise SourceError(f"{weights}: module {module!r} has lora_{''.join(pair)} without its partner.")
        a, b = pair["A"], pair["B"]
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[0] != b.shape[1]:
            raise SourceError(f"{weights}: lora_A {a.shape} and lora_B {b.shape} of {module!r} do not chain (B·A).")
        name = _module_name(module)
        scale = cfg.scale(name)
        shape = (b.shape[0], a.shape[1])
        if cfg.fan_in_fan_out:
            shape = shape[::-1]

        def delta(a: WeightTensor = a, b: WeightTensor = b, scale: float = scale) -> np.ndarray:
            update = scale * (np.asarray(b.load(), dtype=np.float64) @ np.asarray(a.load(), dtype=np.float64))
            out = np.ascontiguousarray(update.T if cfg.fan_in_fan_out else update)
            out.flags.writeable = False
            return out

        layer_id += 1
        out.append(WeightTensor(layer_id=layer_id, name=f"{name}.lora_BA", longname=f"{name}.lora_BA",
                                layer_type=LayerType.DENSE, shape=shape, dtype="float64", origin=str(weights),
                                key=module, load=delta))
        if base_src is None:
            continue
        w = base_key.get(name + ".weight") or base_long.get(name)
        layer_id += 1
        row = WeightTensor(layer_id=layer_id, name=f"{name}.lora_W_plus_AB", longname=f"{name}.lora_W_plus_AB",
                           layer_type=LayerType.DENSE, shape=shape, dtype="float64", origin=str(weights), key=module,
                           load=delta)
        if w is None:
            row = dataclasses.replace(row, note=f"no layer of the base model has key {name + '.weight'!r}")
        elif w.shape != shape:
            row = dataclasses.replace(row, note=f"the base model's {w.key!r} has shape {w.shape}, not {shape}")
        else:
            def merged(w: WeightTensor = w, delta: Callable[[], np.ndarray] = delta) -> np.ndarray:
                out = np.asarray(w.load(), dtype=np.float64) + delta()
                out.flags.writeable = False
                return out

            row = dataclasses.replace(row, load=merged, dtype=w.dtype, origin=w.origin)
        out.append(row)
    desc = f"LoRA adapter {folder}" + (f" on {base_src.description}" if base_src is not None else "")
    return Source(desc, tuple(out), "lora")
