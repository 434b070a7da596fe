"""Sources: every way a model reaches htsr, reduced to a list of WeightTensors.

This package is the only place that imports a framework (torch), and only
when the object in hand already is one or the file needs it.

=====================================  ========================================
input                                  reader
=====================================  ========================================
``torch.nn.Module``                    :func:`torch_source.module_tensors`
dict of torch tensors / numpy arrays   :func:`torch_source.mapping_entries`
``*.safetensors``                      :mod:`safetensors_file` (lazy, memory-mapped)
Hugging Face folder                    index.json order, else natural key order
``*.npz``                              ``np.load(allow_pickle=False)``, lazy per key
``*.bin``, ``*.pt``, ``*.pth``         ``torch.load(weights_only=True)`` only
=====================================  ========================================
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError
from .base import WeightTensor, natural_key
from .keyvalue import Entry, order_keys, weight_tensors

__all__ = ["Source", "open_source", "WeightTensor", "natural_key"]

TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class Source:
    """What :func:`open_source` returns: a description and the weight tensors in row order."""

    description: str
    tensors: tuple[WeightTensor, ...]
    kind: str  # 'module', 'mapping', 'safetensors', 'folder', 'npz', 'torch-file'


def open_source(obj: Any) -> Source:
    """Recognize ``obj`` and list its weight tensors (nothing is read yet).

    Raises
    ------
    SourceError
        When the object or path is not something htsr reads; the message
        names the path.
    """
    from .torch_source import is_torch_module, mapping_entries

    if isinstance(obj, Source):
        return obj
    if is_torch_module(obj):
        from .torch_source import module_tensors

        return Source(f"{type(obj).__name__} (PyTorch module)", tuple(module_tensors(obj)), "module")
    if isinstance(obj, (str, os.PathLike)):
        return _open_path(Path(obj))
    if isinstance(obj, dict):
        entries = mapping_entries(obj, "<dict>")
        if not entries:
            raise SourceError(
                f"The dict given holds no tensors or numpy arrays ({len(obj)} keys"
                + (f", e.g. {next(iter(obj))!r}" if obj else "") + ")."
            )
        return Source(f"dict of {len(entries)} arrays", tuple(weight_tensors(entries)), "mapping")
    raise SourceError(
        f"htsr cannot read an object of type {type(obj).__module__}.{type(obj).__qualname__}; "
        "pass a torch.nn.Module, a state dict, a dict of numpy arrays, or a path to a "
        ".safetensors / .npz / .bin / .pt / .pth file or a Hugging Face folder."
    )


def _open_path(path: Path) -> Source:
    from . import safetensors_file

    if not path.exists():
        raise SourceError(f"{path}: no such file or folder.")
    if path.is_dir():
        entries = safetensors_file.folder_entries(path)
        if entries is not None:
            return Source(str(path), tuple(weight_tensors(entries)), "folder")
        for name in ("pytorch_model.bin", "model.pt", "model.pth"):
            if (path / name).is_file():
                return _open_path(path / name)
        npz = sorted(path.glob("*.npz"))
        if len(npz) == 1:
            return _open_path(npz[0])
        raise SourceError(
            f"{path}: no model weights found in this folder (looked for model.safetensors, "
            "model.safetensors.index.json, *.safetensors, pytorch_model.bin)."
        )
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        entries = safetensors_file.file_entries(path)
        return Source(str(path), tuple(weight_tensors(entries)), "safetensors")
    if suffix == ".npz":
        return Source(str(path), tuple(weight_tensors(_npz_entries(path))), "npz")
    if suffix in TORCH_SUFFIXES:
        from .torch_source import load_state_dict_file, state_dict_from_object

        obj = load_state_dict_file(path)
        sd = state_dict_from_object(obj, str(path))
        entries = [Entry(e.key, e.shape, e.dtype, str(path), e.load) for e in mapping_entries_for_file(sd, path)]
        return Source(str(path), tuple(weight_tensors(entries)), "torch-file")
    raise SourceError(
        f"{path}: unknown file type {suffix or '(no extension)'!r}; htsr reads .safetensors, .npz, "
        ".bin/.pt/.pth (PyTorch state dicts) and Hugging Face folders."
    )


def mapping_entries_for_file(sd: dict, path: Path) -> list[Entry]:
    from .torch_source import mapping_entries

    entries = mapping_entries(sd, str(path))
    if not entries:
        raise SourceError(f"{path}: holds no tensors.")
    return entries


def _npz_entries(path: Path) -> list[Entry]:
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise SourceError(f"{path}: not an .npz archive.")
        keys = list(npz.files)
    except SourceError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(f"{path}: not a readable .npz file ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    entries = []
    for key in order_keys(keys):
        shape, dtype = _npy_header(npz, key, path)

        def load(key: str = key) -> np.ndarray:
            try:
                with np.load(path, allow_pickle=False) as z:
                    return np.array(z[key])
            except Exception as exc:
                raise SourceError(f"{path}: cannot read array {key!r} ({exc.__class__.__name__}: {str(exc)[:200]}).") from None

        entries.append(Entry(key, shape, dtype, str(path), load))
    npz.close()
    if not entries:
        raise SourceError(f"{path}: the archive holds no arrays.")
    return entries


def _npy_header(npz: Any, key: str, path: Path) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of one member without reading its data."""
    try:
        with npz.zip.open(key + ".npy") as fh:
            version = np.lib.format.read_magic(fh)
            shape, _, dtype = np.lib.format._read_array_header(fh, version)
        return tuple(int(s) for s in shape), np.dtype(dtype).name
    except Exception as exc:
        raise SourceError(f"{path}: corrupt array {key!r} ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
