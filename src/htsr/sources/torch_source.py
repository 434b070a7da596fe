"""PyTorch modules and tensors in memory, and the fallback for pickles that are not ``torch.save`` files.

torch is imported only here, and only when the object is already a torch
object or the file needs it. ``torch.save`` files (zip or legacy) are read by
:mod:`.torch_pickle` without torch; any other pickle is read with
``torch.load(weights_only=True)`` alone: one that needs anything more is
refused, never executed.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LayerType
from ..errors import SourceError, UnsafeFileError
from .base import Source, Ties, WeightTensor, layer_type_from_class, layer_type_from_shape
from .keyvalue import Entry, order_keys


def is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def is_torch_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _read_only(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


def tensor_to_numpy(t: Any) -> np.ndarray:
    """A read-only numpy view (or converted copy) of a torch tensor; the tensor itself is never changed.

    bfloat16/float8 are widened to float32, quantized tensors dequantized,
    sparse tensors made dense; complex stays complex (the layer is then
    reported invalid).
    """
    import torch

    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_complex():
        return _read_only(t.resolve_conj().cpu().numpy())
    if t.dtype in (torch.bfloat16,) or "float8" in str(t.dtype):
        t = t.to(torch.float32)
    return _read_only(t.resolve_neg().cpu().numpy())


def _module_type(module: Any) -> LayerType:
    import torch

    for cls, ltype in ((torch.nn.Linear, LayerType.DENSE), (torch.nn.Conv1d, LayerType.CONV1D),
                       (torch.nn.Conv2d, LayerType.CONV2D), (torch.nn.Embedding, LayerType.EMBEDDING)):
        if isinstance(module, cls):
            return ltype
    return layer_type_from_class(str(type(module)))


def _split_type(module: Any) -> str:
    import torch

    for cls in (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN, torch.nn.LSTMCell, torch.nn.GRUCell, torch.nn.RNNCell,
                torch.nn.MultiheadAttention):
        if isinstance(module, cls):
            return cls.__name__
    return ""


def module_tensors(model: Any, extra_rows: bool = True) -> Iterator[WeightTensor]:
    """One WeightTensor per module that holds a ``weight`` tensor.

    ``layer_id`` is the module's index in ``model.modules()``; ``name`` the
    attribute name and ``longname`` the dotted path, as the reference numbers
    them. Nothing on the model is changed. A weight shared with an earlier
    module (tied embeddings) is yielded with a ``note`` naming the first.
    With ``extra_rows``, the gate matrices of RNNs and the q/k/v blocks of
    ``nn.MultiheadAttention`` follow as extra rows (:mod:`.splits`), numbered
    after the last module.
    """
    import torch

    from .splits import source_param, split_pieces

    ties = Ties()
    others: list[tuple[str, Any]] = []
    extras: list[tuple[str, str, tuple, Any]] = []
    n_modules = 0
    for layer_id, (longname, module) in enumerate(model.named_modules()):
        n_modules = layer_id + 1
        split = _split_type(module) if extra_rows else ""
        consumed = {"weight"}
        if split:
            params = {n: (tuple(int(s) for s in p.shape), functools.partial(tensor_to_numpy, p))
                      for n, p in module.named_parameters(recurse=False)}
            dtype = next((str(p.dtype).replace("torch.", "") for p in module.parameters(recurse=False)), "float32")
            for pname, shape, load in split_pieces(split, params):
                extras.append((longname, pname, shape, (load, dtype)))
                consumed.add(source_param(pname))
        if extra_rows:  # the census: the module's other tensors of two or more dimensions, listed
            own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
            others.extend((f"{longname}.{n}" if longname else n, t) for n, t in own
                          if n not in consumed and t is not None and t.ndim >= 2)
        try:
            weight = getattr(module, "weight", None)  # a property or parametrization may compute (and fail)
        except Exception:
            weight = None
        if not isinstance(weight, torch.Tensor):
            continue
        ltype = _module_type(module)
        ident: tuple
        try:
            ident = (weight.untyped_storage().data_ptr(), weight.storage_offset(), tuple(weight.shape))
        except Exception:  # meta tensors, exotic subclasses
            ident = (id(weight),)
        note = ties.note(ident if weight.numel() > 0 else None, longname)
        name = longname.split(".")[-1] if longname else type(module).__name__
        try:
            bias = getattr(module, "bias", None)
        except Exception:
            bias = None
        yield WeightTensor(
            layer_id=layer_id,
            name=name,
            longname=longname or name,
            layer_type=ltype,
            shape=tuple(int(s) for s in weight.shape),
            dtype=str(weight.dtype).replace("torch.", ""),
            origin="<module>",
            key=(longname + ".weight") if longname else "weight",
            load=functools.partial(tensor_to_numpy, weight),
            note=note,
            bias=functools.partial(tensor_to_numpy, bias) if isinstance(bias, torch.Tensor) else None,
        )
    for offset, (longname, pname, shape, (load, dtype)) in enumerate(extras):
        full = f"{longname}.{pname}" if longname else pname
        param = source_param(pname)  # the key is the parameter's state-dict key, as for a file
        yield WeightTensor(layer_id=n_modules + offset, name=pname, longname=full, layer_type=LayerType.DENSE,
                           shape=shape, dtype=dtype, origin="<module>",
                           key=f"{longname}.{param}" if longname else param, load=load, extra=True)
    from .keyvalue import NOT_A_WEIGHT

    for offset, (key, tensor) in enumerate(others, start=n_modules + len(extras)):
        shape = tuple(int(s) for s in tensor.shape)
        yield WeightTensor(layer_id=offset, name=key, longname=key, layer_type=layer_type_from_shape(key, shape),
                           shape=shape, dtype=str(tensor.dtype).replace("torch.", ""),
                           origin="<module>", key=key, load=functools.partial(tensor_to_numpy, tensor),
                           note=NOT_A_WEIGHT)


def load_state_dict_file(path: Path) -> dict:
    """``torch.load(path, weights_only=True)``; refuse anything that needs more.

    Raises
    ------
    UnsafeFileError
        The pickle names a callable beyond tensors and plain containers
        (``os.system``, a custom class …): loading it would run code.
    SourceError
        Not a PyTorch file, truncated or corrupt.
    """
    try:
        import torch
    except ImportError:
        raise SourceError(
            f"{path}: reading PyTorch files needs torch; install it with `pip install htsr[torch]`."
        ) from None
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        blocked = next((ln for ln in lines if "GLOBAL" in ln or "global" in ln), "")
        names = [] if blocked else _unsafe_globals(path)
        if blocked or names:
            what = blocked or "it names " + ", ".join(names[:5])
            raise UnsafeFileError(
                f"{path}: refused: loading this pickle would run code beyond plain tensors ({what[:200]}); "
                "htsr only reads files torch.load(weights_only=True) accepts and never unpickles anything else. "
                "Re-save the state dict (torch.save(model.state_dict(), ...)) or convert it to safetensors."
            ) from None
        detail = next((ln for ln in lines if "Unsupported" in ln), lines[-1] if lines else "")
        raise SourceError(f"{path}: not a readable PyTorch state-dict file ({detail[:200]}).") from None
    except Exception as exc:  # truncated zip, random bytes, absurd sizes …
        raise SourceError(f"{path}: not a readable PyTorch file ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    return obj


_SAFE_GLOBAL = re.compile(r"^(torch\.|collections\.OrderedDict$|_codecs\.encode$)")
_IDENT = re.compile(r"^[A-Za-z_][\w.]*$")


def _unsafe_globals(path: Path, limit: int = 8) -> list[str]:
    """Callables the pickle(s) in ``path`` would import, found by reading opcodes only (nothing runs).

    Looks in the file itself (legacy format: several pickles in a row) or in
    the ``data.pkl`` member of a zip checkpoint. Names under ``torch.`` and
    ``collections.OrderedDict`` are what state dicts use and are left out.
    """
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return []
                with zf.open(member) as fh:
                    stream = io.BytesIO(fh.read(64 << 20))
        else:
            with open(path, "rb") as fh:
                stream = io.BytesIO(fh.read(64 << 20))
    except Exception:
        return []
    names: list[str] = []
    for _ in range(limit):  # legacy files hold several pickles one after another
        strings: list[str] = []
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    names.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:
            break
    return [n for n in dict.fromkeys(names) if _IDENT.match(n) and not _SAFE_GLOBAL.match(n)]


def state_dict_from_object(obj: Any, origin: str, _depth: int = 0) -> dict:
    """Find the state dict inside a loaded checkpoint object (``state_dict``, ``model`` … keys)."""
    if isinstance(obj, dict) and _depth < 4:
        tensors = {k: v for k, v in obj.items() if is_torch_tensor(v) or isinstance(v, np.ndarray)}
        if tensors:
            return obj
        for key in ("state_dict", "model_state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner is not obj:
                return state_dict_from_object(inner, origin, _depth + 1)
    if is_torch_module(obj):
        return obj.state_dict()
    raise SourceError(f"{origin}: holds no state dict of tensors (found {type(obj).__name__}).")


def _identity(value: Any) -> tuple | None:
    """Memory identity of a tensor or array: equal for tied weights (same data, same view)."""
    try:
        if is_torch_tensor(value):
            if value.numel() == 0:
                return None
            return ("t", value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                    tuple(value.stride()), str(value.dtype))
        if value.size == 0:
            return None
        return ("n", value.__array_interface__["data"][0], value.shape, value.strides, value.dtype.str)
    except Exception:  # meta or exotic tensors: no identity, never tied
        return None


def mapping_entries(mapping: dict, origin: str) -> list[Entry]:
    """Entries for a dict of torch tensors and/or numpy arrays, natural key order.

    A value that is the very same tensor as an earlier key's (tied embeddings
    in a state dict) gets a note and is analyzed once, under the first key.
    """
    mapping = {str(k): v for k, v in mapping.items()}
    out = []
    ties = Ties()
    for key in order_keys(mapping):
        value = mapping[key]
        if is_torch_tensor(value):
            entry = Entry(key, tuple(int(s) for s in value.shape), str(value.dtype).replace("torch.", ""),
                          origin, functools.partial(tensor_to_numpy, value))
        elif isinstance(value, np.ndarray):
            entry = Entry(key, tuple(value.shape), value.dtype.name, origin, functools.partial(_read_only, value))
        else:
            continue
        note = ties.note(_identity(value), key)
        out.append(dataclasses.replace(entry, note=note) if note else entry)
    return out


def mapping_entries_for_file(sd: dict, path: Path) -> list[Entry]:
    """:func:`mapping_entries` of a state dict loaded from ``path``; a file without tensors is an error."""
    entries = mapping_entries(sd, str(path))
    if not entries:
        raise SourceError(f"{path}: holds no tensors.")
    return entries


def sniff_pickle(path: Path, head: bytes) -> bool:
    """A pickle (protocol 2 to 5) that is not a ``torch.save`` file: tried with ``torch.load(weights_only=True)``."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def open_pickle(path: Path, extra_rows: bool = True) -> Source:
    """A state dict pickled without ``torch.save``'s layout, read by ``torch.load(weights_only=True)`` only."""
    from .keyvalue import keyvalue_tensors

    sd = state_dict_from_object(load_state_dict_file(path), str(path))
    return Source(str(path), tuple(keyvalue_tensors(mapping_entries_for_file(sd, path), extra_rows)), "torch-file")


def open_module(model: Any, extra_rows: bool = True, reference_ids: bool = False) -> Source:
    """A ``torch.nn.Module`` in memory (:data:`htsr.sources.registry.OBJECT_READERS`)."""
    return Source(f"{type(model).__name__} (PyTorch module)", tuple(module_tensors(model, extra_rows)), "module")
