"""Sources: every way a model reaches htsr, reduced to a list of WeightTensors.

This package is the only place that imports a framework (torch), and only
when the object in hand already is one or the file needs it.

=======================================  ========================================
input                                    reader
=======================================  ========================================
an object in memory                      :data:`registry.OBJECT_READERS`, in priority order:
                                         Keras 3 model, ``torch.nn.Module`` (+ :mod:`splits`),
                                         ``onnx.ModelProto``, nested dict of arrays (JAX/Flax)
dict of torch tensors / numpy arrays     :func:`torch_source.mapping_entries` (the state-dict
                                         rule; a checkpoint dict's inner state dict)
a file                                   :mod:`registry`: recognized by its content
                                         (safetensors, GGUF, HDF5, torch zip and legacy,
                                         ``.keras``, npz, pickle, Flax msgpack, ONNX),
                                         else by its suffix
a folder                                 :mod:`folders`: Hugging Face layouts, shards,
                                         LoRA adapters (:func:`delta.lora_source`)
=======================================  ========================================

Key-value sources (state dicts, safetensors, npz, GGUF, whole pickled
modules read from files) become rows through
:func:`keyvalue.keyvalue_tensors`: every tensor of two or more dimensions
is a row, analyzed or skipped with its reason (the census).

:func:`delta.delta_source` wraps any two of these: ``W − W_base`` by key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import SourceError
from .base import Source, WeightTensor, natural_key
from .keyvalue import keyvalue_tensors

__all__ = ["Source", "open_source", "open_lora", "WeightTensor", "natural_key"]


def open_source(obj: Any, extra_rows: bool = True, reference_ids: bool = False) -> Source:
    """Recognize ``obj`` and list its weight tensors (nothing is read yet).

    ``extra_rows=False`` leaves out the rows the reference does not have
    (RNN gates, attention q/k/v: :mod:`.splits`); ``reference_ids=True`` numbers
    ONNX rows as the reference does (``Treatment.reference_ids``). The compat layer passes both.

    Raises
    ------
    SourceError
        When the object or path is not something htsr reads; the message
        names the path.
    """
    from .registry import object_reader
    from .torch_source import is_torch_module, mapping_entries

    if isinstance(obj, Source):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return _open_path(Path(obj), extra_rows, reference_ids)
    reader = object_reader(obj)
    if reader is not None:
        return reader.read(obj, extra_rows, reference_ids)
    if isinstance(obj, dict):
        entries = mapping_entries(obj, "<dict>")
        if not entries:  # a checkpoint dict in memory: the state dict (or module) under "state_dict", "model" …
            from .torch_source import state_dict_from_object

            inner = next((obj[k] for k in ("model", "module", "net") if is_torch_module(obj.get(k))), None)
            if inner is None:
                try:
                    inner = state_dict_from_object(obj, "<dict>")
                except SourceError:
                    inner = None
            if inner is not None and inner is not obj:
                return open_source(inner, extra_rows, reference_ids)
            raise SourceError(
                f"The dict given holds no tensors or numpy arrays ({len(obj)} keys"
                + (f", e.g. {next(iter(obj))!r}" if obj else "") + ")."
            )
        return Source(f"dict of {len(entries)} arrays", tuple(keyvalue_tensors(entries, extra_rows)), "mapping")
    raise SourceError(
        f"htsr cannot read an object of type {type(obj).__module__}.{type(obj).__qualname__}; "
        "pass a torch.nn.Module, a Keras model, an onnx.ModelProto, a state dict, a (nested) dict of arrays, "
        "or a path to a model file or folder (.safetensors, .npz, .bin/.pt/.pth/.ckpt, .onnx, .gguf, "
        ".keras/.h5, .msgpack, a Hugging Face folder)."
    )


def open_lora(folder: str | Path, base: Any = None) -> Source:
    """A LoRA adapter folder's rows ΔW = s·B·A, and W + ΔW for each module when ``base`` (any model) is given.

    See :func:`htsr.sources.delta.lora_source`; ``open_source(folder)`` is ``open_lora(folder)``.
    """
    from .folders import open_adapter

    return open_adapter(Path(folder), open_source(base) if base is not None else None)


def _open_path(path: Path, extra_rows: bool = True, reference_ids: bool = False) -> Source:
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long …
        raise SourceError(f"{str(path)[:300]}: not a usable path ({exc}).") from None
    if not exists:
        raise SourceError(f"{path}: no such file or folder.")
    if is_dir:
        from .folders import open_folder

        return open_folder(path, extra_rows)
    from .registry import open_file

    return open_file(path, extra_rows, reference_ids)
