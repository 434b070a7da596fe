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
from pathlib import Path

import numpy as np

from ..errors import LayerError, SourceError
from .base import Source, StoredMatrix
from .dtypes import bf16_to_float32, fp8_to_float32
from .keyvalue import Entry, order_keys

_NUMPY = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
    "BOOL": np.bool_, "C64": np.complex64,
}
_SPECIAL = {"BF16": (np.uint16, "bfloat16"), "F8_E4M3": (np.uint8, "float8_e4m3"),
            "F8_E5M2": (np.uint8, "float8_e5m2")}
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: Path) -> tuple[dict, int, int]:
    """Return (header without metadata, data start offset, file size).

    Every entry is validated against the file size (dtype, shape, offsets),
    so a truncated, corrupt or hostile file fails here with a
    :class:`SourceError` naming the file and key, before any data is read.
    """
    require_regular_file(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise SourceError(f"{path}: not a safetensors file (only {len(head)} bytes).")
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > _MAX_HEADER or 8 + n > size:
                raise SourceError(
                    f"{path}: not a safetensors file or truncated (header length {n}, file size {size})."
                )
            raw = fh.read(n)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read file: {exc.strerror or exc}.") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd nesting
        raise SourceError(f"{path}: corrupt safetensors header ({exc.__class__.__name__}).") from None
    if not isinstance(header, dict):
        raise SourceError(f"{path}: corrupt safetensors header (not a JSON object).")
    header.pop("__metadata__", None)
    start = 8 + n
    for key, info in header.items():
        _check_entry(path, key, info, start, size)
    return header, start, size


def require_regular_file(path: Path) -> None:
    """SourceError unless ``path`` is a regular file (a FIFO or device would block or never end)."""
    try:
        if path.is_file():
            return
    except (OSError, ValueError):
        pass
    raise SourceError(f"{path}: not a regular file (a folder, pipe or device cannot be read as weights).")


def _itemsize(dtype: str) -> int | None:
    """Bytes per element of a safetensors dtype, None for dtypes htsr cannot decode."""
    if dtype in _SPECIAL:
        return np.dtype(_SPECIAL[dtype][0]).itemsize
    if dtype in _NUMPY:
        return np.dtype(_NUMPY[dtype]).itemsize
    return None


def _check_entry(path: Path, key: str, info: object, start: int, size: int) -> None:
    """Validate one header entry; an unknown (but well-formed) dtype is left for the layer to report."""
    bad = f"{path}: corrupt safetensors entry {key!r}"
    if not isinstance(info, dict):
        raise SourceError(f"{bad} (not an object).")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or not dtype:
        raise SourceError(f"{bad}: bad dtype {dtype!r}.")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise SourceError(f"{bad}: bad shape {str(shape)[:100]}.")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise SourceError(f"{bad}: bad data_offsets {str(offsets)[:100]}.")
    b, e = offsets
    if not 0 <= b <= e:
        raise SourceError(f"{bad}: data_offsets {offsets} are not an increasing pair of byte positions.")
    itemsize = _itemsize(dtype)
    count = math.prod(shape)  # exact: JSON integers may be huge
    if itemsize is not None and e - b != count * itemsize:
        raise SourceError(f"{bad}: data_offsets {offsets} do not match shape {str(shape)[:100]} and dtype {dtype}.")
    if start + e > size:
        raise SourceError(f"{path}: truncated: tensor {key!r} ends at byte {start + e} of {size}.")


def _loader(path: Path, key: str, info: dict, start: int):
    dtype = info["dtype"]
    shape = tuple(info["shape"])
    b, e = info["data_offsets"]

    def load() -> np.ndarray:
        if _itemsize(dtype) is None:
            raise LayerError(f"invalid: safetensors dtype {dtype} is not supported ({key!r} in {path})")
        storage = _SPECIAL[dtype][0] if dtype in _SPECIAL else _NUMPY[dtype]
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


def _decoder(dtype: str, storage: type):
    """Raw block (stored dtype, little-endian) → decoded array, a new native-order array."""
    if dtype == "BF16":
        return lambda raw: bf16_to_float32(np.asarray(raw))
    if dtype in ("F8_E4M3", "F8_E5M2"):
        return lambda raw: fp8_to_float32(np.asarray(raw), dtype)
    return lambda raw: np.array(raw, dtype=storage)


def _stored(path: Path, key: str, info: dict, start: int):
    """``stored()`` for a 2-D tensor of a readable dtype (None otherwise): a :class:`StoredMatrix`
    that memory-maps the tensor for each block it decodes."""
    dtype = info["dtype"]
    shape = tuple(info["shape"])
    if len(shape) != 2 or _itemsize(dtype) is None or math.prod(shape) == 0:
        return None
    storage = _SPECIAL[dtype][0] if dtype in _SPECIAL else _NUMPY[dtype]
    b = info["data_offsets"][0]
    name = _SPECIAL[dtype][1] if dtype in _SPECIAL else np.dtype(storage).name

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
        name = _SPECIAL[dt][1] if dt in _SPECIAL else np.dtype(_NUMPY[dt]).name if dt in _NUMPY else dt
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
        return 0 < n <= _MAX_HEADER and 8 + n <= path.stat().st_size
    except OSError:
        return False


def open_file(path: Path, extra_rows: bool = True) -> Source:
    from .keyvalue import keyvalue_tensors

    return Source(str(path), tuple(keyvalue_tensors(file_entries(path), extra_rows)), "safetensors")
