"""``.npz`` archives (``numpy.savez``): one entry per ``.npy`` member, never unpickled."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import SourceError
from .base import Source
from .keyvalue import Entry, keyvalue_tensors, order_keys


def sniff(path: Path, head: bytes) -> bool:
    """A zip archive whose members are all ``.npy`` arrays."""
    if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except Exception:
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def open_file(path: Path, extra_rows: bool = True) -> Source:
    return Source(str(path), tuple(keyvalue_tensors(npz_entries(path), extra_rows)), "npz")


def npz_entries(path: Path) -> list[Entry]:
    """One entry per ``.npy`` member, headers read now, data on demand (never unpickled)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith(".npy")]
            described = [(m[:-len(".npy")], *_npy_header(zf, m, path)) for m in members]
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
