"""PyTorch modules, tensors and ``.bin`` / ``.pt`` / ``.pth`` state-dict files.

torch is imported only here, and only when the object is already a torch
object or the file is a PyTorch file. Files are read with
``torch.load(weights_only=True)`` alone: a pickle that needs anything more is
refused, never executed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..config import LayerType
from ..errors import SourceError, UnsafeFileError
from .base import WeightTensor
from .keyvalue import Entry, order_keys


def is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def is_torch_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def tensor_to_numpy(t: Any) -> np.ndarray:
    """A fresh numpy copy of a torch tensor (bfloat16/float8 widened to float32)."""
    import torch

    t = t.detach()
    if t.is_complex():
        return t.cpu().numpy().copy()
    if t.dtype in (torch.bfloat16,) or "float8" in str(t.dtype):
        t = t.to(torch.float32)
    return t.cpu().numpy().copy()


def _module_type(module: Any) -> LayerType:
    import torch

    typestr = str(type(module)).lower()
    if isinstance(module, torch.nn.Linear) or "linear" in typestr:
        return LayerType.DENSE
    if isinstance(module, torch.nn.Conv1d) or "conv1d" in typestr:
        return LayerType.CONV1D
    if isinstance(module, torch.nn.Conv2d) or "conv2d" in typestr:
        return LayerType.CONV2D
    if isinstance(module, torch.nn.Embedding) or "embedding" in typestr:
        return LayerType.EMBEDDING
    if "norm" in typestr:
        return LayerType.NORM
    return LayerType.OTHER


def module_tensors(model: Any) -> Iterator[WeightTensor]:
    """One WeightTensor per module that holds a ``weight`` tensor.

    ``layer_id`` is the module's index in ``model.modules()``; ``name`` the
    attribute name and ``longname`` the dotted path, as the reference numbers
    them. Nothing on the model is changed. A weight shared with an earlier
    module (tied embeddings) is yielded with a ``note`` naming the first.
    """
    import torch

    seen: dict[tuple, str] = {}
    for layer_id, (longname, module) in enumerate(model.named_modules()):
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        ltype = _module_type(module)
        note = ""
        try:
            ident = (weight.untyped_storage().data_ptr(), weight.storage_offset(), tuple(weight.shape))
        except Exception:  # meta tensors, exotic subclasses
            ident = (id(weight),)
        if ident in seen and weight.numel() > 0:
            note = f"tied: same tensor as {seen[ident]}"
        else:
            seen[ident] = longname
        name = longname.split(".")[-1] if longname else type(module).__name__
        yield WeightTensor(
            layer_id=layer_id,
            name=name,
            longname=longname or name,
            layer_type=ltype,
            shape=tuple(int(s) for s in weight.shape),
            dtype=str(weight.dtype).replace("torch.", ""),
            origin="<module>",
            key=(longname + ".weight") if longname else "weight",
            load=(lambda w=weight: tensor_to_numpy(w)),
            note=note,
        )


def load_state_dict_file(path: Path) -> dict:
    """``torch.load(path, weights_only=True)``; refuse anything that needs more."""
    try:
        import torch
    except ImportError:
        raise SourceError(
            f"{path}: reading PyTorch files needs torch; install it with `pip install htsr[torch]`."
        ) from None
    import pickle

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "Unsupported" in ln or "global" in ln.lower()), first[0] if first else "")
        raise UnsafeFileError(
            f"{path}: refused: this pickle needs code beyond plain tensors to load "
            f"({detail.strip()[:200]}); htsr only reads files torch.load(weights_only=True) accepts. "
            "Re-save the state dict (torch.save(model.state_dict(), ...)) or convert it to safetensors."
        ) from None
    except Exception as exc:  # truncated zip, random bytes, …
        raise SourceError(f"{path}: not a readable PyTorch file ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    return obj


def state_dict_from_object(obj: Any, origin: str) -> dict:
    """Find the state dict inside a loaded checkpoint object."""
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if is_torch_tensor(v) or isinstance(v, np.ndarray)}
        if tensors:
            return obj
        for key in ("state_dict", "model_state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                return state_dict_from_object(inner, origin)
    if is_torch_module(obj):
        return obj.state_dict()
    raise SourceError(f"{origin}: holds no state dict of tensors (found {type(obj).__name__}).")


def mapping_entries(mapping: dict, origin: str) -> list[Entry]:
    """Entries for a dict of torch tensors and/or numpy arrays, natural key order."""
    mapping = {str(k): v for k, v in mapping.items()}
    out = []
    for key in order_keys(mapping):
        value = mapping[key]
        if is_torch_tensor(value):
            out.append(Entry(key, tuple(int(s) for s in value.shape), str(value.dtype).replace("torch.", ""),
                             origin, (lambda v=value: tensor_to_numpy(v))))
        elif isinstance(value, np.ndarray):
            out.append(Entry(key, tuple(value.shape), value.dtype.name, origin,
                             (lambda v=value: np.array(v, copy=True))))
    return out
