"""JAX / Flax parameters: a nested-dict pytree in memory, or a Flax ``.msgpack`` checkpoint.

A pytree is a nested mapping (``dict``, Flax's ``FrozenDict``) whose leaves are
arrays (numpy, ``jax.Array`` — anything ``numpy.asarray`` accepts). Leaves
named ``kernel`` or ``embedding`` are weights; their path, without a leading
``params`` and the leaf name, is the row name (``params/Dense_0/kernel`` →
``Dense_0``). Rows come in the natural order of the paths, ``layer_id``
counting them from 1 (the key-value rule). Kernels are turned into PyTorch's
layout:

=====================================  ==============================  =================
leaf                                   Flax layout                     row
=====================================  ==============================  =================
``kernel``, rank 2 (``nn.Dense``)      (in, out)                       dense (out, in)
``kernel``, rank 4 (``nn.Conv``)       (kh, kw, in, out)               conv2d (out, in, kh, kw)
``kernel``, rank 3, path with "conv"   (k, in, out)                    conv1d (out, in, k)
``kernel``, rank ≥ 3 otherwise         ``nn.DenseGeneral``: the first  dense (out, in)
                                       axis is the input (the last
                                       for a path ending in ``out``)
``embedding`` (``nn.Embed``)           (vocab, dim)                    embedding as stored
=====================================  ==============================  =================

The msgpack reader is htsr's own (the ``msgpack`` package; Flax is not needed):
Flax writes arrays as msgpack extension type 1 holding
``msgpack((shape, dtype name, C-order bytes))``, numpy scalars as type 3, and
arrays over 2**30 bytes as a ``{"__msgpack_chunked_array__": True, "shape",
"chunks"}`` map of flat pieces. Nothing else in the file is interpreted.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LayerType
from ..errors import SourceError
from .base import Source, Ties, WeightTensor, layer_type_from_shape, natural_key
from .dtypes import bf16_to_float32

_DTYPES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
           "uint64", "uint32", "uint16", "uint8", "bool", "complex64", "complex128"}
_MAX_FILE = 64 << 30
_CHUNKED = "__msgpack_chunked_array__"


@dataclass(frozen=True)
class _Packed:
    """An array as stored in the msgpack file: decoded only when read."""

    shape: tuple[int, ...]
    dtype: str
    buffer: bytes

    def array(self) -> np.ndarray:
        storage = np.uint16 if self.dtype == "bfloat16" else np.dtype(self.dtype)
        arr = np.frombuffer(self.buffer, dtype=np.dtype(storage).newbyteorder("<")).reshape(self.shape)
        return bf16_to_float32(arr) if self.dtype == "bfloat16" else arr.astype(arr.dtype.newbyteorder("="))


class _Bad(Exception):
    pass


def _ext_hook(code: int, data: bytes) -> Any:
    import msgpack

    if code not in (1, 3):  # 2 = a native complex scalar: not a weight
        return None
    try:
        shape, dtype, buffer = msgpack.unpackb(data, raw=True)
    except Exception as exc:
        raise _Bad(f"bad array record ({exc.__class__.__name__})") from None
    dtype = dtype.decode("ascii", "replace") if isinstance(dtype, bytes) else str(dtype)
    if dtype not in _DTYPES:
        raise _Bad(f"array dtype {dtype[:40]!r} is not supported")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and s >= 0 for s in shape) or len(shape) > 32:
        raise _Bad(f"bad array shape {str(shape)[:80]}")
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    if not isinstance(buffer, bytes) or len(buffer) != math.prod(shape) * itemsize:
        raise _Bad(f"array of shape {tuple(shape)[:8]} and dtype {dtype} does not match its {len(buffer)} bytes")
    return _Packed(tuple(shape), dtype, buffer)


def _unchunk(tree: Any, depth: int = 0) -> Any:
    """Reassemble Flax's chunked arrays (and validate nesting depth)."""
    if depth > 200:
        raise _Bad("nesting deeper than 200 levels")
    if isinstance(tree, dict):
        if tree.get(_CHUNKED) is True:
            shape_map, chunks = tree.get("shape"), tree.get("chunks")
            if not isinstance(shape_map, dict) or not isinstance(chunks, dict):
                raise _Bad("bad chunked array")
            shape = tuple(shape_map[str(i)] for i in range(len(shape_map)))
            pieces = [chunks[str(i)] for i in range(len(chunks))]
            if not all(isinstance(p, _Packed) and p.dtype == pieces[0].dtype for p in pieces) or not pieces:
                raise _Bad("bad chunked array pieces")
            if not all(isinstance(s, int) and s >= 0 for s in shape):
                raise _Bad("bad chunked array shape")
            buffer = b"".join(p.buffer for p in pieces)
            itemsize = 2 if pieces[0].dtype == "bfloat16" else np.dtype(pieces[0].dtype).itemsize
            if len(buffer) != math.prod(shape) * itemsize:
                raise _Bad("chunked array pieces do not fill its shape")
            return _Packed(shape, pieces[0].dtype, buffer)
        return {k: _unchunk(v, depth + 1) for k, v in tree.items()}
    return tree


def read_msgpack(path: Path) -> dict:
    """The state dict of a Flax msgpack checkpoint, arrays kept packed until read."""
    try:
        import msgpack
    except ImportError:
        raise SourceError(f"{path}: reading Flax checkpoints needs msgpack; install it with "
                          "`pip install 'htsr[jax]'`.") from None
    try:
        size = path.stat().st_size
        if size > _MAX_FILE:
            raise SourceError(f"{path}: {size} bytes is larger than htsr reads as one msgpack checkpoint.")
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read file: {exc.strerror or exc}.") from None
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
        tree = _unchunk(tree)
    except _Bad as exc:
        raise SourceError(f"{path}: corrupt Flax msgpack checkpoint ({exc}).") from None
    except Exception as exc:  # truncated, extra data, bad UTF-8, depth limit …
        raise SourceError(f"{path}: not a Flax msgpack checkpoint ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    if not isinstance(tree, dict):
        raise SourceError(f"{path}: not a Flax msgpack checkpoint (the top level is a {type(tree).__name__}).")
    return tree


def is_pytree(obj: Any) -> bool:
    """A nested mapping with a ``kernel`` or ``embedding`` leaf (a flat dict of arrays is a state dict)."""
    if not isinstance(obj, Mapping) or not any(isinstance(v, Mapping) for v in obj.values()):
        return False
    return any(path[-1] in ("kernel", "embedding") for path, _ in _leaves(obj))


def _leaves(tree: Mapping, prefix: tuple[str, ...] = (), depth: int = 0) -> Iterator[tuple[tuple[str, ...], Any]]:
    if depth > 200:
        return
    for k, v in tree.items():
        path = (*prefix, str(k))
        if isinstance(v, Mapping):
            yield from _leaves(v, path, depth + 1)
        else:
            yield path, v


def _is_array(v: Any) -> bool:
    if isinstance(v, (np.ndarray, _Packed)):
        return True
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(v, jax.Array)


def _layout(arr: np.ndarray, leaf: str, name: str) -> tuple[np.ndarray, LayerType]:
    if leaf == "embedding":
        return arr, LayerType.EMBEDDING
    if arr.ndim == 2:
        return arr.T, LayerType.DENSE
    if arr.ndim == 4:
        return arr.transpose(3, 2, 0, 1), LayerType.CONV2D
    if arr.ndim == 3 and "conv" in name.lower():
        return arr.transpose(2, 1, 0), LayerType.CONV1D
    if arr.ndim >= 3:
        if name.split(".")[-1] == "out":
            return arr.reshape(-1, arr.shape[-1]).T, LayerType.DENSE
        return arr.reshape(arr.shape[0], -1).T, LayerType.DENSE
    return arr, LayerType.OTHER


def _shape_of(v: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in v.shape)


def _dtype_of(v: Any) -> str:
    return v.dtype if isinstance(v, _Packed) else str(np.dtype(v.dtype).name) if hasattr(v, "dtype") else "?"


def pytree_tensors(tree: Mapping, origin: str) -> list[WeightTensor]:
    """Rows of a parameter pytree (see the module docstring)."""
    found, other = [], []
    for path, leaf in _leaves(tree):
        if not _is_array(leaf):
            continue
        if path[-1] not in ("kernel", "embedding"):
            if len(_shape_of(leaf)) >= 2:  # the census: listed, with the reason it is not analyzed
                other.append(("/".join(path), path, leaf))
            continue
        parts = path[1:-1] if path[0] == "params" and len(path) > 2 else path[:-1]
        name = ".".join(parts) or path[-1]
        found.append((name, path, leaf))
    found.sort(key=lambda f: natural_key(f[0]))
    out = []
    ties = Ties()
    for layer_id, (name, path, leaf) in enumerate(found, start=1):
        note = ties.note(id(leaf), name)  # the very same array object twice in the tree: a tied weight
        stored = _shape_of(leaf)
        _, ltype = _layout(np.empty(stored, dtype=np.uint8), path[-1], name)
        shape = _layout(np.empty(stored, dtype=np.uint8), path[-1], name)[0].shape

        def load(leaf: Any = leaf, leaf_name: str = path[-1], name: str = name) -> np.ndarray:
            arr = leaf.array() if isinstance(leaf, _Packed) else np.asarray(leaf)
            if arr.dtype.kind == "V" or arr.dtype.name == "bfloat16":  # ml_dtypes bfloat16 from jax
                arr = arr.astype(np.float32)
            out = np.ascontiguousarray(_layout(arr, leaf_name, name)[0])
            out.flags.writeable = False
            return out

        out.append(WeightTensor(layer_id=layer_id, name=name, longname=name, layer_type=ltype,
                                shape=tuple(int(s) for s in shape), dtype=_dtype_of(leaf), origin=origin,
                                key="/".join(path), load=load, note=note))
    if not out:
        raise SourceError(f"{origin}: the parameter tree holds no 'kernel' or 'embedding' arrays.")
    for layer_id, (key, _path, leaf) in enumerate(sorted(other, key=lambda f: natural_key(f[0])), start=len(out) + 1):
        def read(leaf: Any = leaf) -> np.ndarray:
            return leaf.array() if isinstance(leaf, _Packed) else np.asarray(leaf)

        out.append(WeightTensor(layer_id=layer_id, name=key, longname=key,
                                layer_type=layer_type_from_shape(key, _shape_of(leaf)),
                                shape=_shape_of(leaf), dtype=_dtype_of(leaf), origin=origin, key=key, load=read,
                                note="not a layer weight: a parameter other than 'kernel' or 'embedding'"))
    if not out:
        raise SourceError(f"{origin}: the parameter tree holds no 'kernel' or 'embedding' arrays.")
    return out


def msgpack_tensors(path: Path) -> list[WeightTensor]:
    return pytree_tensors(read_msgpack(path), str(path))



def sniff(path: Path, head: bytes) -> bool:
    """A msgpack map with string keys (a Flax state dict): fixmap/map16/map32, then a str."""
    if len(head) < 2:
        return False
    first = head[0]
    if 0x81 <= first <= 0x8F:
        key = head[1]
    elif first in (0xDE, 0xDF) and len(head) >= (4 if first == 0xDE else 6):
        key = head[3 if first == 0xDE else 5]
    else:
        return False
    return 0xA0 <= key <= 0xBF or key in (0xD9, 0xDA, 0xDB)


def open_file(path: Path, extra_rows: bool = True) -> Source:
    return Source(str(path), tuple(msgpack_tensors(path)), "msgpack")


def open_pytree(tree: Any, extra_rows: bool = True, reference_ids: bool = False) -> Source:
    """A nested dict of arrays (JAX/Flax parameters) in memory (:data:`htsr.sources.registry.OBJECT_READERS`)."""
    return Source("parameter pytree (nested dict)", tuple(pytree_tensors(tree, "<pytree>")), "pytree")
