"""Sources: every way a model reaches htsr, reduced to a list of WeightTensors.

This package is the only place that imports a framework (torch), and only
when the object in hand already is one or the file needs it.

=======================================  ========================================
input                                    reader
=======================================  ========================================
``torch.nn.Module``                      :func:`torch_source.module_tensors` (+ :mod:`splits`)
dict of torch tensors / numpy arrays     :func:`torch_source.mapping_entries`
nested dict of arrays (JAX/Flax params)  :func:`jax_source.pytree_tensors`
Keras 3 model                            :func:`keras_source.model_tensors`
``onnx.ModelProto``                      :func:`onnx_file.onnx_tensors`
``*.safetensors``                        :mod:`safetensors_file` (lazy, memory-mapped)
Hugging Face folder                      index.json order, else natural key order; also
                                         ``pytorch_model.bin.index.json`` shards
LoRA adapter folder                      :func:`delta.lora_source` (``adapter_config.json``)
``*.npz``                                ``np.load(allow_pickle=False)``, lazy per key
``*.bin/.pt/.pth/.ckpt``                 :mod:`torch_pickle`: no-code unpickler (zip and
                                         legacy formats); state dicts, whole models,
                                         TorchScript
other pickles                            ``torch.load(weights_only=True)`` only
``*.onnx``                               :mod:`onnx_file` (``onnx`` extra)
``*.gguf``                               :mod:`gguf_file` (``gguf`` extra)
``*.keras``, ``*.h5``                    :mod:`keras_source` (``keras`` extra: h5py)
``*.msgpack``                            :mod:`jax_source` (``jax`` extra: msgpack)
=======================================  ========================================

:func:`delta.delta_source` wraps any two of these: ``W − W_base`` by key.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError
from .base import Source, WeightTensor, natural_key
from .keyvalue import Entry, order_keys, weight_tensors

__all__ = ["Source", "open_source", "open_lora", "WeightTensor", "natural_key"]

TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


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
    from .torch_source import is_torch_module, mapping_entries

    if isinstance(obj, Source):
        return obj
    from .keras_source import is_keras_model

    # before torch: a Keras model on the torch backend is also a torch.nn.Module
    if is_keras_model(obj):
        from .keras_source import model_tensors as keras_model_tensors

        return Source(f"{type(obj).__name__} {obj.name!r} (Keras model)", tuple(keras_model_tensors(obj)), "keras")
    if is_torch_module(obj):
        from .torch_source import module_tensors

        return Source(f"{type(obj).__name__} (PyTorch module)", tuple(module_tensors(obj, extra_rows)), "module")
    from .onnx_file import is_onnx_model

    if is_onnx_model(obj):
        from .onnx_file import onnx_tensors

        return Source(f"ONNX model {obj.graph.name!r}",
                      tuple(t for t in onnx_tensors(obj, None, reference_ids) if extra_rows or not t.extra), "onnx")
    if isinstance(obj, (str, os.PathLike)):
        return _open_path(Path(obj), extra_rows, reference_ids)
    from .jax_source import is_pytree

    if is_pytree(obj):
        from .jax_source import pytree_tensors

        return Source("parameter pytree (nested dict)", tuple(pytree_tensors(obj, "<pytree>")), "pytree")
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
        return Source(f"dict of {len(entries)} arrays", tuple(weight_tensors(entries)), "mapping")
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
    from .delta import adapter_weights, lora_source

    return lora_source(folder, _open_path(adapter_weights(folder)), open_source(base) if base is not None else None)


def _open_path(path: Path, extra_rows: bool = True, reference_ids: bool = False) -> Source:
    from . import safetensors_file

    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long …
        raise SourceError(f"{str(path)[:300]}: not a usable path ({exc}).") from None
    if not exists:
        raise SourceError(f"{path}: no such file or folder.")
    if is_dir:
        from .delta import ADAPTER_CONFIG

        if (path / ADAPTER_CONFIG).is_file():
            return open_lora(path)
        entries = safetensors_file.folder_entries(path)
        if entries is not None:
            return Source(str(path), tuple(weight_tensors(entries)), "folder")
        if (path / "pytorch_model.bin.index.json").is_file():
            return Source(str(path), tuple(weight_tensors(_bin_index_entries(path))), "folder")
        for name in ("pytorch_model.bin", "model.pt", "model.pth"):
            if (path / name).is_file():
                return _open_path(path / name, extra_rows, reference_ids)
        npz = sorted(path.glob("*.npz"))
        if len(npz) == 1:
            return _open_path(npz[0], extra_rows, reference_ids)
        raise SourceError(
            f"{path}: no model weights found in this folder (looked for model.safetensors, "
            "model.safetensors.index.json, *.safetensors, pytorch_model.bin)."
        )
    suffix = path.suffix.lower()
    if suffix in (".safetensors", ".npz") + TORCH_SUFFIXES:
        safetensors_file.require_regular_file(path)
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise SourceError(f"{path}: cannot read file: {exc.strerror or exc}.") from None
    if suffix == ".safetensors":
        entries = safetensors_file.file_entries(path)
        return Source(str(path), tuple(weight_tensors(entries)), "safetensors")
    if suffix == ".onnx":
        from . import onnx_file

        safetensors_file.require_regular_file(path)
        rows = onnx_file.onnx_tensors(onnx_file.load_model(path), path, reference_ids)
        return Source(str(path), tuple(t for t in rows if extra_rows or not t.extra), "onnx")
    if suffix in (".keras", ".h5", ".hdf5"):
        from .keras_source import keras_tensors

        safetensors_file.require_regular_file(path)
        return Source(str(path), tuple(keras_tensors(path)), "keras")
    if suffix == ".msgpack":
        from .jax_source import msgpack_tensors

        safetensors_file.require_regular_file(path)
        return Source(str(path), tuple(msgpack_tensors(path)), "msgpack")
    if suffix == ".gguf":
        from .gguf_file import gguf_entries

        safetensors_file.require_regular_file(path)
        return Source(str(path), tuple(weight_tensors(gguf_entries(path))), "gguf")
    if suffix == ".npz":
        return Source(str(path), tuple(weight_tensors(_npz_entries(path))), "npz")
    if suffix in TORCH_SUFFIXES:
        from . import torch_pickle

        if torch_pickle.is_torch_zip(path):
            return _torch_zip_source(path, extra_rows)
        if torch_pickle.is_legacy(path):
            return _torch_zip_source(path, extra_rows, legacy=True)
        from .torch_source import load_state_dict_file, state_dict_from_object

        obj = load_state_dict_file(path)
        sd = state_dict_from_object(obj, str(path))
        return Source(str(path), tuple(weight_tensors(mapping_entries_for_file(sd, path))), "torch-file")
    raise SourceError(
        f"{path}: unknown file type {suffix or '(no extension)'!r}; htsr reads .safetensors, .npz, "
        ".bin/.pt/.pth/.ckpt (PyTorch), .onnx, .gguf, .keras/.h5, .msgpack (Flax), Hugging Face folders "
        "and LoRA adapter folders."
    )


def _torch_zip_source(path: Path, extra_rows: bool = True, legacy: bool = False) -> Source:
    """A ``torch.save`` / ``torch.jit.save`` file (zip, or the legacy format), read by the no-code unpickler."""
    from . import torch_pickle

    archive = torch_pickle.read_legacy(path) if legacy else torch_pickle.read_archive(path)
    kind, obj = torch_pickle.find_weights(archive.root, str(path))
    if kind == "module":
        tensors = torch_pickle.module_tensors(archive, obj, extra_rows)
        if not tensors:
            raise SourceError(f"{path}: the pickled module holds no weight tensors.")
        return Source(f"{path} ({obj._htsr_global.replace('__torch__.', '', 1)}, pickled module)",
                      tuple(tensors), "module")
    entries = torch_pickle.state_dict_entries(archive, obj)
    return Source(str(path), tuple(weight_tensors(entries)), "torch-file")


def _bin_index_entries(folder: Path) -> list[Entry]:
    """Sharded ``pytorch_model-*.bin`` files, in the order of ``pytorch_model.bin.index.json``."""
    import json

    from . import torch_pickle

    index = folder / "pytorch_model.bin.index.json"
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        raise SourceError(f"{index}: not a valid index (no 'weight_map' object of file names).") from None
    by_file: dict[str, list[str]] = {}
    for key, fname in weight_map.items():
        by_file.setdefault(fname, []).append(key)
    entries: dict[str, Entry] = {}
    for fname, keys in by_file.items():
        if os.path.sep in fname or "/" in fname or fname in ("", ".", ".."):
            raise SourceError(f"{index}: shard name {fname!r} points outside {folder}.")
        shard = folder / fname
        if not shard.is_file():
            raise SourceError(f"{index}: shard {fname!r} is missing from {folder}.")
        legacy = torch_pickle.is_legacy(shard)
        if not legacy and not torch_pickle.is_torch_zip(shard):
            from .torch_source import load_state_dict_file, state_dict_from_object

            sd = state_dict_from_object(load_state_dict_file(shard), str(shard))
            got = {e.key: e for e in mapping_entries_for_file(sd, shard)}
            missing = [k for k in keys if k not in got]
            if missing:
                raise SourceError(f"{index}: names tensor {missing[0]!r}, which {shard} does not hold.")
            entries.update((k, got[k]) for k in keys)
            continue
        archive = torch_pickle.read_legacy(shard) if legacy else torch_pickle.read_archive(shard)
        kind, obj = torch_pickle.find_weights(archive.root, str(shard))
        if kind != "state_dict":
            raise SourceError(f"{shard}: a shard must hold a state dict, not a pickled module.")
        for entry in torch_pickle.state_dict_entries(archive, obj, keys):
            entries[entry.key] = entry
    return [entries[k] for k in weight_map]


def mapping_entries_for_file(sd: dict, path: Path) -> list[Entry]:
    from .torch_source import mapping_entries

    entries = mapping_entries(sd, str(path))
    if not entries:
        raise SourceError(f"{path}: holds no tensors.")
    return entries


def _npz_entries(path: Path) -> list[Entry]:
    """One entry per ``.npy`` member, headers read now, data on demand (never unpickled)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith(".npy")]
            described = [(m[: -len(".npy")],) + _npy_header(zf, m, path) for m in members]
    except SourceError:
        raise
    except Exception as exc:  # not a zip, truncated, bad compression, encrypted …
        raise SourceError(f"{path}: not a readable .npz file ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    if not described:
        raise SourceError(f"{path}: the archive holds no arrays.")
    info = {key: (shape, dtype) for key, shape, dtype in described}
    entries = []
    for key in order_keys(info):
        shape, dtype = info[key]

        def load(key: str = key) -> np.ndarray:
            try:
                with np.load(path, allow_pickle=False) as z:
                    return np.array(z[key])
            except Exception as exc:
                raise SourceError(f"{path}: cannot read array {key!r} ({exc.__class__.__name__}: {str(exc)[:200]}).") from None

        entries.append(Entry(key, shape, dtype, str(path), load))
    return entries


def _npy_header(zf: zipfile.ZipFile, member: str, path: Path) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of one ``.npy`` member without reading its data."""
    fmt = np.lib.format
    try:
        with zf.open(member) as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        return tuple(int(s) for s in shape), np.dtype(dtype).name
    except Exception as exc:
        raise SourceError(f"{path}: corrupt array {member!r} ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
