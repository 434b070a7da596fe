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

import numpy as np

from ..config import LayerType
from ..errors import LayerError, SourceError
from .base import Source, WeightTensor, natural_key

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


def delta_source(src: Source, ref: Source) -> Source:
    """A source whose rows are ``W − W_base`` (see the module docstring).

    Parameters
    ----------
    src, ref
        The fine-tuned and the base model, opened (:func:`htsr.sources.open_source`
        reads modules, state dicts, paths); the keys are matched, not the kinds.
    """
    by_key, by_long = _by_key(ref.tensors)
    out = []
    for t in src.tensors:
        # a split row (an RNN gate) shares its key with the other gates: matched by its long name
        b = by_long.get(t.longname) if t.extra else by_key.get(t.key) or by_long.get(t.longname)
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


def adapter_weights(folder: str | Path) -> Path:
    """The adapter's weight file in ``folder``: ``adapter_model.safetensors`` or ``adapter_model.bin``."""
    folder = Path(folder)
    weights = next((folder / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (folder / n).is_file()), None)
    if weights is None:
        raise SourceError(f"{folder}: no adapter_model.safetensors or adapter_model.bin next to {ADAPTER_CONFIG}.")
    return weights


def lora_source(folder: str | Path, adapter: Source, base: Source | None = None) -> Source:
    """Rows ``ΔW = s·B·A`` of a LoRA adapter folder, and ``W + ΔW`` when ``base`` is given.

    ``adapter`` is the opened :func:`adapter_weights` file, ``base`` the opened base
    model (``open_source`` opens an adapter folder without a base itself).

    Raises
    ------
    SourceError
        No ``adapter_config.json`` / adapter weights, an A without its B, or
        A and B whose shapes do not chain.
    """
    folder = Path(folder)
    cfg = read_lora_config(folder)
    weights = adapter_weights(folder)
    tensors = adapter.tensors
    pairs: dict[str, dict[str, WeightTensor]] = {}
    for t in tensors:
        m = _LORA_KEY.match(t.key)
        if m:
            pairs.setdefault(m.group("module"), {})[m.group("which")] = t
    if not pairs:
        raise SourceError(f"{weights}: holds no lora_A / lora_B weights.")
    base_src = base
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


def _lora_part(longname: str) -> str | None:
    parts = longname.split(".")
    return "A" if "lora_A" in parts else "B" if "lora_B" in parts else None


def peft_source(src: Source, with_base: bool = False) -> Source:
    """The reference's ``peft=`` view of an in-memory PEFT model (``lora_A`` / ``lora_B`` submodules).

    Each ``lora_A`` row becomes ``lora_BA``: the update ``B·A`` (unscaled, as the
    reference computes it), analyzed on its ``r`` largest eigenvalues
    (``num_components``). With ``with_base`` (``peft='with_base'``) the other
    layers stay and each ``lora_B`` row becomes ``lora_W_plus_AB`` = W + B·A with W
    the nearest preceding non-LoRA layer (the wrapped ``base_layer``), listed
    before its ``lora_BA`` row; otherwise every other layer is listed as skipped.
    """
    out: list[WeightTensor] = []
    last_w: WeightTensor | None = None
    pending_a: WeightTensor | None = None
    for t in src.tensors:
        part = _lora_part(t.longname)
        if part is None:
            last_w = t
            out.append(t if with_base else dataclasses.replace(
                t, note=t.note or "peft=True: only the LoRA updates (lora_BA) are analyzed"))
            continue
        if part == "A":
            pending_a = t
            continue
        if pending_a is None or len(t.shape) != 2 or len(pending_a.shape) != 2:
            out.append(dataclasses.replace(t, note=t.note or "a lora_B without its lora_A"))
            continue
        a, b = pending_a, t
        pending_a = None
        a_wide = a.shape[0] <= a.shape[1]  # A is (r, in) as PEFT stores it; else take its transpose
        r = min(a.shape)
        a_rows = a.shape[0] if a_wide else a.shape[1]
        b_flip = b.shape[1] != a_rows
        out_dim = b.shape[1] if b_flip else b.shape[0]
        in_dim = a.shape[1] if a_wide else a.shape[0]

        def update(a: WeightTensor = a, b: WeightTensor = b, a_wide: bool = a_wide, b_flip: bool = b_flip) -> np.ndarray:
            am = np.asarray(a.load(), dtype=np.float64)
            bm = np.asarray(b.load(), dtype=np.float64)
            return (bm.T if b_flip else bm) @ (am if a_wide else am.T)

        ba = dataclasses.replace(a, longname=a.longname.replace("lora_A", "lora_BA"), name=a.name.replace("lora_A", "lora_BA"),
                                 layer_type=LayerType.DENSE, shape=(out_dim, in_dim), dtype="float64", load=update,
                                 num_components=r, note="")
        if with_base and last_w is not None:
            w_shape = last_w.shape if a_wide else last_w.shape[::-1]
            merged_note = "" if w_shape == (out_dim, in_dim) else \
                f"the base layer {last_w.longname} has shape {last_w.shape}, not {(out_dim, in_dim)}"

            def merged(w: WeightTensor = last_w, update: Callable[[], np.ndarray] = update, a_wide: bool = a_wide) -> np.ndarray:
                ba_m = update()
                return np.asarray(w.load(), dtype=np.float64) + (ba_m if a_wide else ba_m.T)

            out.append(dataclasses.replace(b, longname=b.longname.replace("lora_B", "lora_W_plus_AB"),
                                           name=b.name.replace("lora_B", "lora_W_plus_AB"), layer_type=LayerType.DENSE,
                                           shape=tuple(last_w.shape), dtype="float64", load=merged, num_components=r,
                                           note=merged_note))
        out.append(ba)
    return Source(f"{src.description}, LoRA updates (peft={'with_base' if with_base else True})", tuple(out), src.kind)
