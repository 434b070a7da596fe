"""Resumable runs: every finished layer appended to a JSON-lines checkpoint file.

``htsr.analyze(model, checkpoint="run.jsonl")`` (CLI ``--checkpoint FILE``)
writes, as the run goes::

    {"htsr_checkpoint": 1, "htsr_version": "0.1.0", "options": {...}, "source": {...}}   ← header
    {"index": 0, "layer_id": 2, "longname": "encoder.layer.0.attention.self.query", "output": {...}}
    {"index": 1, ...}                                                                    ← one per layer

Each line is flushed and ``fsync``-ed when its layer finishes, so after a crash
or ``kill -9`` at most the layer being computed is lost (a torn last line is
dropped on reading). Run the same command again: the layers already in the
file are read back instead of computed, and the report — hence its CSV — is
byte-identical to an uninterrupted run's (floats are stored as their exact
``repr``, arrays as their raw bytes).

The header pins what the numbers depend on: the options (all but
``workers`` and ``progress``, which never change a result), the htsr version
and a fingerprint of the source (:func:`source_fingerprint`). A checkpoint
whose header differs is refused with a :class:`~htsr.errors.CheckpointError`
naming what differs; it is never overwritten.

Decoding is JSON only: the one non-JSON type that can come back is a result
dataclass from a fixed allow-list (nothing is ever unpickled).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import CheckpointError

FORMAT = 1
#: Options that never change a number (only how fast it comes).
NEUTRAL_OPTIONS = ("workers", "progress")
#: Bytes hashed at each end of every source file.
SAMPLE_BYTES = 1 << 20


# --------------------------------------------------------------------------------------- value codec

_RESULT_MODULES = ("htsr.results",)  # and every module of htsr.spectral (the result types LayerResult holds)


def _dataclasses() -> dict[str, type]:
    """The dataclasses a checkpoint may hold, by qualified name (the allow-list for decoding):
    :class:`~htsr.results.LayerResult` and the result types of :mod:`htsr.spectral` it is made of."""
    import importlib
    import pkgutil

    from . import spectral

    names = list(_RESULT_MODULES) + [f"htsr.spectral.{m.name}" for m in pkgutil.iter_modules(spectral.__path__)]
    out: dict[str, type] = {}
    for name in names:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == name:
                out[f"{name}.{obj.__qualname__}"] = obj
    return out


def _build(cls: type, values: dict) -> Any:
    """An instance of dataclass ``cls`` from its field values (fields with ``init=False`` set afterwards)."""
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    obj = cls(**{k: v for k, v in values.items() if k in init})
    for k, v in values.items():
        if k not in init:
            object.__setattr__(obj, k, v)
    return obj


def encode(value: Any) -> Any:
    """A JSON-ready form of ``value`` that :func:`decode` turns back into an equal value of the same type.

    Handles None, bool, int, str, float (NaN/±Inf too), numpy scalars and
    arrays (exact bytes), tuples, lists, dicts (any hashable encodable keys)
    and the allow-listed dataclasses.

    Examples
    --------
    >>> v = {"a": (1, float("nan")), (2, None): np.arange(3.0)}
    >>> back = decode(json.loads(json.dumps(encode(v))))
    >>> back["a"][0], np.isnan(back["a"][1]), back[(2, None)].tolist()
    (1, True, [0.0, 1.0, 2.0])
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, np.integer):
        return value
    if isinstance(value, float) and not isinstance(value, np.floating):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.generic):
        return {"__np__": value.dtype.str, "v": encode(value.item())}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("object arrays cannot be checkpointed")
        data = np.ascontiguousarray(value)
        return {"__array__": data.dtype.str, "shape": list(data.shape),
                "b64": base64.b64encode(data.tobytes()).decode("ascii")}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        return {"__dataclass__": f"{cls.__module__}.{cls.__qualname__}",
                "fields": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    raise TypeError(f"cannot checkpoint a value of type {type(value).__name__}")


def decode(value: Any, _classes: dict[str, type] | None = None) -> Any:
    """Inverse of :func:`encode` (on the parsed JSON)."""
    if isinstance(value, list):
        return [decode(v, _classes) for v in value]
    if not isinstance(value, dict):
        return value
    if "__float__" in value:
        return float(value["__float__"])
    if "__np__" in value:
        return np.dtype(value["__np__"]).type(decode(value["v"], _classes))
    if "__array__" in value:
        dtype = np.dtype(value["__array__"])
        if dtype.hasobject:
            raise CheckpointError("checkpoint holds an object array")
        raw = base64.b64decode(value["b64"])
        return np.frombuffer(raw, dtype=dtype).reshape(value["shape"]).copy()
    if "__tuple__" in value:
        return tuple(decode(v, _classes) for v in value["__tuple__"])
    if "__dict__" in value:
        return {_hashable(decode(k, _classes)): decode(v, _classes) for k, v in value["__dict__"]}
    if "__dataclass__" in value:
        classes = _classes if _classes is not None else _dataclasses()
        cls = classes.get(value["__dataclass__"])
        if cls is None:
            raise CheckpointError(f"checkpoint holds an unknown type {value['__dataclass__']!r}")
        return _build(cls, {k: decode(v, classes) for k, v in value["fields"].items()})
    return {k: decode(v, _classes) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


# ------------------------------------------------------------------------------------- fingerprints

def _file_digest(path: str) -> dict:
    """Name, size and a SHA-256 of the first and last ``SAMPLE_BYTES`` of a file (its header and tail)."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        h.update(fh.read(SAMPLE_BYTES))
        if size > SAMPLE_BYTES:
            fh.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
            h.update(fh.read(SAMPLE_BYTES))
    return {"name": p.name, "size": size, "sha256_ends": h.hexdigest()}


def source_fingerprint(source: Any, load_in_memory: bool = True) -> dict:
    """What identifies a model: its tensors (key, shape, dtype) and their data.

    For files, each file's name, size and a hash of its first and last MiB
    (for safetensors the header, with every key, shape and offset, and the
    last tensors' bytes); the path itself is not part of it, so a moved
    folder resumes. For in-memory models (modules, dicts) a hash of every
    tensor's bytes.

    Parameters
    ----------
    source : htsr.sources.Source
    load_in_memory : bool
        Hash in-memory tensors' data (False: only keys, shapes and dtypes).

    Returns
    -------
    dict
        ``{"kind", "tensors": sha256, "files": [...]}`` or ``{"kind", "tensors", "data": sha256}``.
    """
    h = hashlib.sha256()
    origins: list[str] = []
    for t in source.tensors:
        h.update(json.dumps([t.key, list(t.shape), t.dtype]).encode())
        if t.origin not in origins:
            origins.append(t.origin)
    out: dict[str, Any] = {"kind": source.kind, "tensors": h.hexdigest()}
    files = [o for o in origins if not o.startswith("<") and os.path.isfile(o)]
    if files:
        out["files"] = [_file_digest(f) for f in files]
    elif load_in_memory:
        d = hashlib.sha256()
        for t in source.tensors:
            arr = np.ascontiguousarray(t.load())
            if arr.size:
                d.update(arr.reshape(-1).view(np.uint8).data)
        out["data"] = d.hexdigest()
    return out


def options_fingerprint(options: dict) -> dict:
    """The options that change a result (``workers`` and ``progress`` left out), JSON-ready."""
    return {k: encode(v) for k, v in sorted(options.items()) if k not in NEUTRAL_OPTIONS}


def make_header(version: str, options: dict, source: dict) -> dict:
    return {"htsr_checkpoint": FORMAT, "htsr_version": version, "options": options_fingerprint(options),
            "source": source}


# ------------------------------------------------------------------------------------------ the file

def _differences(have: dict, want: dict) -> list[str]:
    out = []
    if have.get("htsr_checkpoint") != want["htsr_checkpoint"]:
        out.append(f"format {have.get('htsr_checkpoint')!r}, expected {want['htsr_checkpoint']}")
    if have.get("htsr_version") != want["htsr_version"]:
        out.append(f"written by htsr {have.get('htsr_version')}, this is htsr {want['htsr_version']}")
    hopt, wopt = have.get("options") or {}, want["options"]
    for k in sorted(set(hopt) | set(wopt)):
        if hopt.get(k) != wopt.get(k):
            out.append(f"option {k}={decode(hopt.get(k))!r} there, {decode(wopt.get(k))!r} now")
    if have.get("source") != want["source"]:
        out.append("another model (its tensors or file contents differ)")
    return out


class Checkpoint:
    """An open checkpoint file: what is done, and :meth:`append` for what finishes.

    Use :meth:`open`; the file is created with ``header`` when it does not exist,
    else its header must equal ``header`` (else :class:`CheckpointError`).

    Attributes
    ----------
    path : Path
    done : dict
        ``(layer_id, longname) → output`` of the layers already in the file.
    """

    def __init__(self, path: Path, header: dict, done: dict, fh: Any) -> None:
        self.path = path
        self.header = header
        self.done = done
        self._fh = fh

    @classmethod
    def open(cls, path: str | os.PathLike, header: dict) -> Checkpoint:
        path = Path(path)
        want = json.loads(json.dumps(header))  # as it reads back
        done: dict[tuple, Any] = {}
        if path.exists():
            if not path.is_file():
                raise CheckpointError(f"checkpoint {path}: not a regular file.")
            good, done, have = _read(path)
            if have is None:
                if good:  # pragma: no cover - a header line always comes first
                    raise CheckpointError(f"checkpoint {path}: no header line.")
            else:
                diff = _differences(have, want)
                if diff:
                    raise CheckpointError(f"checkpoint {path} belongs to another run: {'; '.join(diff)}. "
                                          "Use another file, or delete it to start over.")
            fh: Any = open(path, "r+b")  # noqa: SIM115 - kept open for the run
            fh.truncate(good)  # drop a torn last line
            fh.seek(good)
            if have is None:
                _write_line(fh, want)
        else:
            try:
                fh = open(path, "xb")  # noqa: SIM115
            except OSError as exc:
                raise CheckpointError(f"checkpoint {path}: cannot create: {exc.strerror or exc}.") from None
            _write_line(fh, want)
        return cls(path, want, done, fh)

    def append(self, index: int, layer_id: int, longname: str, output: Any) -> None:
        """Record one finished layer (flushed and fsync-ed before returning)."""
        _write_line(self._fh, {"index": index, "layer_id": layer_id, "longname": longname, "output": encode(output)})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _write_line(fh: BinaryIO, doc: dict) -> None:
    fh.write(json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n")
    fh.flush()
    os.fsync(fh.fileno())


def _read(path: Path) -> tuple[int, dict, dict | None]:
    """(bytes of complete lines, done layers, header) of a checkpoint; a torn last line is ignored."""
    done: dict[tuple, Any] = {}
    header = None
    good = 0
    classes = _dataclasses()
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break  # torn by a crash: dropped
            try:
                doc = json.loads(raw)
            except ValueError:
                if fh.read(1):  # a bad line in the middle: the file is not ours
                    raise CheckpointError(f"checkpoint {path}: corrupt line at byte {good}.") from None
                break
            if header is None:
                if not isinstance(doc, dict) or "htsr_checkpoint" not in doc:
                    raise CheckpointError(f"checkpoint {path}: not an htsr checkpoint (no header line).")
                header = doc
            else:
                try:
                    done[(doc["layer_id"], doc["longname"])] = decode(doc["output"], classes)
                except (KeyError, TypeError, ValueError) as exc:
                    raise CheckpointError(f"checkpoint {path}: corrupt layer line at byte {good} ({exc}).") from None
            good += len(raw)
    return good, done, header


def resume(todo: list, ckpt: Checkpoint, run: Callable[[list], Iterable[Any]],
           on_done: Callable[[Any], None] | None = None) -> Iterator[Any]:
    """Outputs of every plan in ``todo``, in order: from the checkpoint where there, else from ``run``.

    Layers are matched by ``(layer_id, longname)``. ``run(plans)`` computes the
    missing plans and yields their outputs in order; each is appended to
    ``ckpt`` as it arrives. ``on_done(plan)`` is called for the layers read
    back (to advance a progress bar).
    """
    def key(p: Any) -> tuple:
        return (p.tensor.layer_id, p.tensor.longname)

    missing = [p for p in todo if key(p) not in ckpt.done]
    computed = iter(run(missing)) if missing else iter(())
    for i, p in enumerate(todo):
        if key(p) in ckpt.done:
            if on_done is not None:
                on_done(p)
            yield ckpt.done[key(p)]
        else:
            out = next(computed)
            ckpt.append(i, p.tensor.layer_id, p.tensor.longname, out)
            yield out
