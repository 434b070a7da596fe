"""The safetensors header: parsed and validated without reading any tensor data.

:mod:`.safetensors_file` reads the tensors; the quantized-weight readers
(:mod:`.quant`) read single experts' bytes; both start from :func:`read_header`.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from ..errors import SourceError

NUMPY_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
    "BOOL": np.bool_, "C64": np.complex64,
}
SPECIAL_DTYPES = {"BF16": (np.uint16, "bfloat16"), "F8_E4M3": (np.uint8, "float8_e4m3"),
            "F8_E5M2": (np.uint8, "float8_e5m2")}
MAX_HEADER = 100 * 1024 * 1024


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
            if n == 0 or n > MAX_HEADER or 8 + n > size:
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


def itemsize(dtype: str) -> int | None:
    """Bytes per element of a safetensors dtype, None for dtypes htsr cannot decode."""
    if dtype in SPECIAL_DTYPES:
        return np.dtype(SPECIAL_DTYPES[dtype][0]).itemsize
    if dtype in NUMPY_DTYPES:
        return np.dtype(NUMPY_DTYPES[dtype]).itemsize
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
    size_of = itemsize(dtype)
    count = math.prod(shape)  # exact: JSON integers may be huge
    if size_of is not None and e - b != count * size_of:
        raise SourceError(f"{bad}: data_offsets {offsets} do not match shape {str(shape)[:100]} and dtype {dtype}.")
    if start + e > size:
        raise SourceError(f"{path}: truncated: tensor {key!r} ends at byte {start + e} of {size}.")


