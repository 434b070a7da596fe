"""Read ``.safetensors`` files and Hugging Face checkpoint folders, lazily.

The format is an 8-byte little-endian header length, a JSON header
(``{key: {"dtype", "shape", "data_offsets"}}``) and raw little-endian data.
htsr parses the header itself and memory-maps one tensor at a time, so
memory follows the largest tensor, bfloat16 and float8 need no torch, and a
truncated or corrupt file gives a :class:`~htsr.errors.SourceError` naming the
file and key rather than a panic from a native library.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import LayerError, SourceError
from .base import Source, StoredMatrix
from .dtypes import bf16_to_float32, fp8_to_float32
from .keyvalue import Entry, order_keys
from .safetensors_header import MAX_HEADER, NUMPY_DTYPES, SPECIAL_DTYPES, itemsize, read_header


def _loader(path: Path, key: str, info: dict, start: int) -> Callable[[], np.ndarray]:
    dtype = info["dtype"]
    shape = tuple(info["shape"])
    b, e = info["data_offsets"]

    def load() -> np.ndarray:
        if itemsize(dtype) is None:
            raise LayerError(f"invalid: safetensors dtype {dtype} is not supported ({key!r} in {path})")
        storage = SPECIAL_DTYPES[dtype][0] if dtype in SPECIAL_DTYPES else NUMPY_DTYPES[dtype]
        count = math.prod(shape)
        try:
            raw: np.ndarray
            if count == 0:
                raw = np.zeros(0, dtype=storage)
            else:
                mm = np.memmap(path, dtype=np.uint8, mode="r", offset=start + b, shape=(e - b,))
                raw = np.array(mm).view(np.dtype(storage).newbyteorder("<")).astype(storage, copy=False)
                del mm
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path}: cannot read tensor {key!r}: {exc}.") from None
        if dtype == "BF16":
            arr = bf16_to_float32(raw)
        elif dtype in ("F8_E4M3", "F8_E5M2"):
            arr = fp8_to_float32(raw, dtype)
        else:
            arr = raw
        return arr.reshape(shape)

    return load


def _decoder(dtype: str, storage: type) -> Callable[[np.ndarray], np.ndarray]:
    """Raw block (stored dtype, little-endian) → decoded array, a new native-order array."""
    if dtype == "BF16":
        return lambda raw: bf16_to_float32(np.asarray(raw))
    if dtype in ("F8_E4M3", "F8_E5M2"):
        return lambda raw: fp8_to_float32(np.asarray(raw), dtype)
    return lambda raw: np.array(raw, dtype=storage)


def _stored(path: Path, key: str, info: dict, start: int) -> Callable[[], StoredMatrix] | None:
    """``stored()`` for a 2-D tensor of a readable dtype (None otherwise): a :class:`StoredMatrix`
    that memory-maps the tensor for each block it decodes."""
    dtype = info["dtype"]
    shape = tuple(info["shape"])
    if len(shape) != 2 or itemsize(dtype) is None or math.prod(shape) == 0:
        return None
    storage = SPECIAL_DTYPES[dtype][0] if dtype in SPECIAL_DTYPES else NUMPY_DTYPES[dtype]
    b = info["data_offsets"][0]
    name = SPECIAL_DTYPES[dtype][1] if dtype in SPECIAL_DTYPES else np.dtype(storage).name

    def open_raw() -> np.ndarray:
        try:
            return np.memmap(path, dtype=np.dtype(storage).newbyteorder("<"), mode="r", offset=start + b, shape=shape)
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path}: cannot read tensor {key!r}: {exc}.") from None

    def stored() -> StoredMatrix:
        return StoredMatrix((shape[0], shape[1]), name, open_raw, _decoder(dtype, storage))

    return stored


def file_entries(path: Path, keys: list[str] | None = None) -> list[Entry]:
    """Entries of one file, in natural key order unless ``keys`` gives the order."""
    header, start, _ = read_header(path)
    if keys is None:
        keys = order_keys(header.keys())
    out = []
    for key in keys:
        if key not in header:
            raise SourceError(f"{path}: the index names tensor {key!r}, which the file does not hold.")
        info = header[key]
        dt = info["dtype"]
        name = SPECIAL_DTYPES[dt][1] if dt in SPECIAL_DTYPES else np.dtype(NUMPY_DTYPES[dt]).name if dt in NUMPY_DTYPES else dt
        out.append(Entry(key, tuple(info["shape"]), name, str(path), _loader(path, key, info, start),
                         stored=_stored(path, key, info, start)))
    return out


def folder_entries(folder: Path) -> list[Entry] | None:
    """Entries of a Hugging Face folder, or None when it holds no safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (OSError, ValueError, RecursionError, KeyError, TypeError):
            raise SourceError(f"{index}: not a valid safetensors index (no 'weight_map' object).") from None
        by_file: dict[str, list[str]] = {}
        for key, fname in weight_map.items():
            by_file.setdefault(str(fname), []).append(key)
        entries: dict[str, Entry] = {}
        for fname, keys in by_file.items():
            shard = folder / fname
            if os.path.sep in fname or "/" in fname or fname in ("", ".", ".."):
                raise SourceError(f"{index}: shard name {fname!r} points outside {folder}.")
            if not shard.is_file():
                raise SourceError(f"{index}: shard {fname!r} is missing from {folder}.")
            for entry in file_entries(shard, keys):
                entries[entry.key] = entry
        return [entries[k] for k in weight_map]
    single = folder / "model.safetensors"
    files = [single] if single.is_file() else sorted((f for f in folder.glob("*.safetensors") if f.is_file()),
                                                     key=lambda p: p.name)
    if not files:
        return None
    merged: list[Entry] = []
    for f in files:
        merged.extend(file_entries(f))
    keyed = {e.key: e for e in merged}
    return [keyed[k] for k in order_keys(keyed)]


def sniff(path: Path, head: bytes) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    try:
        return 0 < n <= MAX_HEADER and 8 + n <= path.stat().st_size
    except OSError:
        return False


def open_file(path: Path, extra_rows: bool = True) -> Source:
    from .keyvalue import keyvalue_tensors

    return Source(str(path), tuple(keyvalue_tensors(file_entries(path), extra_rows)), "safetensors")
