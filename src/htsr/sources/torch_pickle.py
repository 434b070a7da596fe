"""PyTorch zip checkpoints read without running any code from them.

``torch.save`` and ``torch.jit.save`` write a zip archive: ``<prefix>/data.pkl``
(a pickle of the saved object, tensors as references to storages) and one raw
little-endian file per storage under ``<prefix>/data/``. htsr unpickles
``data.pkl`` with a restricted unpickler that never imports or calls a real
global: every global becomes an inert stand-in class whose instances record
the arguments and state they were given; only a handful of names have htsr's
own data-only implementations (``collections.OrderedDict`` → a dict,
``torch._utils._rebuild_tensor_v2`` → a :class:`TensorRef`, ``_codecs.encode``
for latin-1 bytes, ``set``). Nothing in the archive's ``code/`` folder is read.

From the recorded object tree this module finds either

* a whole module (``torch.save(model)``; TorchScript's ``__torch__`` classes):
  the state dict that module would give (:func:`module_state_dict`: parameters
  and persistent buffers of an eager module; every tensor attribute of a
  TorchScript module, which keeps no persistence flag), or
* a state dict (plain, or under a ``state_dict`` / ``model`` … key of a
  checkpoint dict),

and lists it as entries for :func:`htsr.sources.keyvalue.keyvalue_tensors`:
a model saved whole, as TorchScript or as its state dict gives one table
(ids, names and numbers; ``docs/formats.md``, "One model, one table").

Tensor data is read on demand, one storage at a time; torch is not needed.
A pickle that names a code-running callable (``os.system``, ``builtins.eval``,
``subprocess`` …) is refused with :class:`~htsr.errors.UnsafeFileError`: it
could not have run here, but such a file is hostile and the user should know.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LayerError, SourceError, UnsafeFileError
from .base import Source, Ties, layer_type_from_class
from .dtypes import bf16_to_float32, fp8_to_float32
from .keyvalue import Entry, order_keys

_MAX_PICKLE = 256 << 20  # data.pkl holds structure only; the largest known is a few MB
_MAX_DEPTH = 200

# storage class name → dtype name (torch's own names, as str(tensor.dtype) without "torch.")
_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",
}
# dtype name → numpy storage dtype (bf16 / fp8 are decoded from their bits)
_NUMPY = {
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": np.uint16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "bool": np.bool_, "complex64": np.complex64, "complex128": np.complex128,
    "float8_e4m3fn": np.uint8, "float8_e5m2": np.uint8,
}
_FP8 = {"float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}

# modules whose callables run code, touch files or processes: naming one is refused
# Naming one of these makes the file hostile (refused, though nothing ran): they run programs, touch files,
# open sockets or import code. Ordinary objects a checkpoint may hold (functools.partial, pathlib paths,
# types.SimpleNamespace, bound methods via getattr …) only become stand-ins.
_HOSTILE_MODULES = ("os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy",
                    "pty", "code", "codeop", "pickle", "_pickle", "marshal", "ctypes", "webbrowser",
                    "multiprocessing", "signal", "commands", "popen2", "pdb", "bdb", "timeit", "asyncio",
                    "http", "urllib", "requests", "ftplib", "smtplib", "telnetlib")
_HOSTILE_BUILTINS = {"eval", "exec", "compile", "open", "__import__", "setattr", "delattr", "globals", "locals",
                     "vars", "input", "breakpoint", "exit", "quit", "help", "print", "__loader__", "memoryview"}
_HOSTILE_NAMES = {"io.open", "_io.open", "io.FileIO", "_io.FileIO", "pathlib.Path.write_text",
                  "pathlib.Path.write_bytes", "pathlib.Path.unlink", "tempfile.mktemp"}


@dataclass(frozen=True)
class StorageRef:
    """A storage named by the pickle: its file ``data/<key>``, dtype and element count."""

    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor view of a storage, as ``_rebuild_tensor_v2`` describes it."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str

    @property
    def ident(self) -> tuple:
        return (self.storage.key, self.offset, self.shape, self.stride)


class _Bad(Exception):
    """Raised inside the unpickler for malformed records; becomes a SourceError."""


class Stub:
    """An inert stand-in for a class or function the pickle names. Records, never runs."""

    _htsr_global = "?"
    _htsr_args: tuple
    _htsr_state: Any
    _htsr_items: list

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_htsr_args", args)
        object.__setattr__(obj, "_htsr_state", None)
        object.__setattr__(obj, "_htsr_items", [])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "_htsr_state", state)

    def __setattr__(self, name: str, value: Any) -> None:  # BUILD's slot state lands here
        self._htsr_items.append((name, value))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._htsr_items.append((key, value))

    def append(self, value: Any) -> None:
        self._htsr_items.append((None, value))

    def extend(self, values: Any) -> None:
        for v in values:
            self.append(v)

    def __repr__(self) -> str:
        return f"<stand-in {self._htsr_global}>"


class _ODict(dict):
    """What ``collections.OrderedDict`` becomes: a plain (ordered) dict."""


def _check_ints(values: Any, what: str) -> tuple[int, ...]:
    if isinstance(values, Stub):  # torch.Size pickled as a class call
        values = values._htsr_args[0] if values._htsr_args else ()
    if not isinstance(values, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise _Bad(f"bad tensor {what} {str(values)[:80]}")
    if len(values) > 64:
        raise _Bad(f"tensor {what} has {len(values)} dimensions")
    return tuple(values)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any, dtype: str | None = None) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise _Bad("a tensor without a storage")
    if not isinstance(offset, int) or offset < 0:
        raise _Bad(f"bad storage offset {offset!r}")
    shape, strides = _check_ints(size, "size"), _check_ints(stride, "stride")
    if len(shape) != len(strides) or any(s < 0 for s in shape) or any(s < 0 for s in strides):
        raise _Bad(f"tensor size {shape} and stride {strides} do not match")
    return TensorRef(storage, offset, shape, strides, dtype or storage.dtype)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = None,
                       hooks: Any = None, dtype: Any = None, *rest: Any) -> TensorRef:
    if not isinstance(dtype, _DType):
        raise _Bad(f"bad tensor dtype {dtype!r}")
    return _tensor(storage, offset, size, stride, dtype=dtype.name)


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
    if func not in (_tensor, _rebuild_tensor_v3, _rebuild_parameter) or not isinstance(args, tuple):
        raise _Bad("a tensor subclass rebuilt by an unknown function")
    return func(*args)


def _size(values: Any = ()) -> tuple:
    return tuple(values)


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Bad("unexpected _codecs.encode call")
    return text.encode("latin1")


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    if isinstance(cls, type) and issubclass(cls, Stub):
        return cls.__new__(cls)
    if cls is _ODict:
        return _ODict()
    raise _Bad("copyreg._reconstructor of an unexpected class")


def _passthrough(value: Any, *rest: Any) -> Any:
    return value


@dataclass(frozen=True)
class _DType:
    name: str


@dataclass(frozen=True)
class _StorageType:
    dtype: str


_FUNCS: dict[str, Any] = {
    "collections.OrderedDict": _ODict,
    "torch._utils._rebuild_tensor": _tensor,
    "torch._utils._rebuild_tensor_v2": _tensor,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type": _rebuild_from_type,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
    "torch.Size": _size,
    "_codecs.encode": _encode,
    "copyreg._reconstructor": _reconstructor,
    "copy_reg._reconstructor": _reconstructor,
    "torch.jit._pickle.restore_type_tag": _passthrough,
    "builtins.set": set, "__builtin__.set": set,
    "builtins.frozenset": frozenset, "__builtin__.frozenset": frozenset,
}
for _n in ("intlist", "tensorlist", "doublelist", "boollist"):
    _FUNCS[f"torch.jit._pickle.build_{_n}"] = _passthrough


def _hostile(module: str, name: str) -> bool:
    top = module.split(".")[0]
    if top in ("builtins", "__builtin__"):
        return name.split(".")[0] in _HOSTILE_BUILTINS
    return (top in _HOSTILE_MODULES or f"{module}.{name}" in _HOSTILE_NAMES
            or module in ("numpy.testing", "torch.hub", "torch.serialization"))


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh: Any, storage_sizes: dict[str, int] | None) -> None:
        super().__init__(fh, encoding="utf-8")
        self.storage_sizes = storage_sizes
        self.classes: dict[str, type] = {}
        self.hostile: list[str] = []
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in _FUNCS:
            return _FUNCS[full]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _NUMPY:
            return _DType(name)
        if _hostile(module, name) and full not in self.hostile:
            self.hostile.append(full)
        cls = self.classes.get(full)
        if cls is None:
            cls = self.classes[full] = type(name[:100] or "Stub", (Stub,), {"_htsr_global": full[:300]})
        return cls

    def persistent_load(self, pid: Any) -> Any:
        # legacy files replace each nn.Module class by ('module', class, source file, source): the class is a stand-in
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module":
            if isinstance(pid[1], type) and issubclass(pid[1], Stub):
                return pid[1]
            raise _Bad("a module record without a class")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise _Bad(f"unknown persistent id {str(pid)[:80]}")
        stype, key, _location, numel = pid[1:5]
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise _Bad(f"bad storage record {str(pid)[:120]}")
        if len(pid) > 5 and pid[5] is not None:  # legacy storage views (torch < 0.4)
            raise _Bad("storage views of the pre-0.4 format are not supported")
        if self.storage_sizes is not None and key not in self.storage_sizes:
            raise _Bad(f"storage {key!r} is missing from the archive")
        ref = self.storages.get(key)
        if ref is None:
            itemsize = np.dtype(_NUMPY[stype.dtype]).itemsize
            if self.storage_sizes is not None and numel * itemsize > self.storage_sizes[key]:
                raise _Bad(f"storage {key!r} claims {numel} elements but holds {self.storage_sizes[key]} bytes")
            ref = self.storages[key] = StorageRef(key, stype.dtype, numel)
        return ref


@dataclass
class Archive:
    """An unpickled checkpoint: the recorded object and how to read its storages."""

    path: Path
    prefix: str
    root: Any
    big_endian: bool
    offsets: dict[str, int] | None = None  # legacy format: each storage's data offset in the file

    def load(self, t: TensorRef, where: str) -> np.ndarray:
        """Read one tensor (a copy), widened to float32 for bfloat16 / float8."""
        if t.dtype not in _NUMPY:
            raise LayerError(f"invalid: tensor dtype {t.dtype} is not supported ({where})")
        np_dtype = np.dtype(_NUMPY[t.dtype])
        if self.big_endian:
            np_dtype = np_dtype.newbyteorder(">")
        count = math.prod(t.shape)
        storage_bytes = t.storage.numel * np.dtype(_NUMPY[t.storage.dtype]).itemsize
        if count * np_dtype.itemsize > 16 * storage_bytes + (64 << 20):
            raise SourceError(f"{self.path}: tensor {where} claims shape {t.shape[:8]} from a storage of "
                              f"{storage_bytes} bytes; refusing to expand it.")
        if count:
            span = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride)) + 1
            storage_items = t.storage.numel * np.dtype(_NUMPY[t.storage.dtype]).itemsize // np_dtype.itemsize
            if span > storage_items:
                raise SourceError(f"{self.path}: tensor {where} reaches past the end of its storage "
                                  f"({span} of {storage_items} elements).")
        try:
            nbytes = t.storage.numel * np.dtype(_NUMPY[t.storage.dtype]).itemsize
            if self.offsets is not None:
                with open(self.path, "rb") as fh:
                    fh.seek(self.offsets[t.storage.key])
                    raw = fh.read(nbytes)
                if len(raw) != nbytes:
                    raise EOFError(f"{len(raw)} of {nbytes} bytes")
            else:
                with zipfile.ZipFile(self.path) as zf, zf.open(f"{self.prefix}data/{t.storage.key}") as fh:
                    raw = fh.read(nbytes)
        except Exception as exc:  # file changed, truncated, bad CRC …
            raise SourceError(f"{self.path}: cannot read storage {t.storage.key!r} of {where} "
                              f"({exc.__class__.__name__}: {str(exc)[:150]}).") from None
        flat = np.frombuffer(raw, dtype=np_dtype, count=len(raw) // np_dtype.itemsize)
        if count:
            view = np.lib.stride_tricks.as_strided(flat[t.offset:], shape=t.shape,
                                                   strides=tuple(s * np_dtype.itemsize for s in t.stride))
            arr = np.array(view, dtype=np_dtype.newbyteorder("="))
        else:
            arr = np.zeros(t.shape, dtype=np_dtype.newbyteorder("="))
        if t.dtype == "bfloat16":
            arr = bf16_to_float32(arr)
        elif t.dtype in _FP8:
            arr = fp8_to_float32(arr, _FP8[t.dtype])
        arr.flags.writeable = False
        return arr


def _check_memo(data: bytes, path: Path) -> None:
    """Refuse a memo index no honest pickle of this size writes: pickle's C unpickler grows its memo to it.

    A ``LONG_BINPUT`` of 240 million (one edited byte) would make it allocate gigabytes before it
    fails. Each memo slot needs its own opcode, so an index is never larger than the pickle.
    """
    import pickletools

    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and (not isinstance(arg, int) or arg > len(data)):
                raise SourceError(f"{path}: corrupt PyTorch checkpoint pickle (memo index {arg} in a pickle of "
                                  f"{len(data)} bytes).")
    except SourceError:
        raise
    except Exception:  # a malformed opcode: the unpickler itself reports it
        return


def _refuse_hostile(path: Path, unpickler: _Unpickler) -> None:
    if unpickler.hostile:
        raise UnsafeFileError(
            f"{path}: refused: the pickle names {', '.join(unpickler.hostile[:5])}, which would run code if "
            "this file were loaded with torch.load; htsr ran nothing. Do not load this file elsewhere either."
        )


def is_torch_zip(path: Path) -> bool:
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("data.pkl") for n in zf.namelist())
    except Exception:
        return False


def read_archive(path: Path) -> Archive:
    """Unpickle ``data.pkl`` of a torch zip checkpoint with stand-ins only.

    Raises
    ------
    UnsafeFileError
        The pickle names a code-running callable (it is not run).
    SourceError
        Not a torch zip checkpoint, truncated or corrupt.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            pkls = sorted((i for i in infos if i.filename.endswith("data.pkl")), key=lambda i: len(i.filename))
            if not pkls:
                raise SourceError(f"{path}: a zip file without data.pkl is not a PyTorch checkpoint.")
            info = pkls[0]
            prefix = info.filename[: -len("data.pkl")]
            if info.file_size > _MAX_PICKLE:
                raise SourceError(f"{path}: data.pkl is {info.file_size} bytes; refusing to unpickle more than "
                                  f"{_MAX_PICKLE} bytes of structure.")
            sizes = {i.filename[len(prefix) + 5:]: i.file_size for i in infos
                     if i.filename.startswith(prefix + "data/")}
            data = zf.read(info)
            big = False
            if prefix + "byteorder" in zf.namelist():
                big = zf.read(prefix + "byteorder")[:8].strip() == b"big"
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"{path}: not a readable PyTorch zip checkpoint "
                          f"({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    _check_memo(data, path)
    unpickler = _Unpickler(io.BytesIO(data), sizes)
    try:
        root = unpickler.load()
    except _Bad as exc:
        raise SourceError(f"{path}: corrupt PyTorch checkpoint ({exc}).") from None
    except Exception as exc:  # truncated pickle, bad opcode, bad memo, unhashable set item …
        if unpickler.hostile:
            root = None
        else:
            raise SourceError(f"{path}: corrupt PyTorch checkpoint pickle "
                              f"({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    _refuse_hostile(path, unpickler)
    return Archive(path, prefix, root, big)


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def is_legacy(path: Path) -> bool:
    """A pre-zip ``torch.save`` file: it starts with a pickled magic number."""
    try:
        with open(path, "rb") as fh:
            return _Unpickler(io.BytesIO(fh.read(64)), None).load() == _LEGACY_MAGIC
    except Exception:
        return False


def read_legacy(path: Path) -> Archive:
    """The legacy (torch < 1.6) format: magic, protocol, sys info, the object, its storage keys, then the storages.

    Each storage is an 8-byte little-endian element count followed by its data; the
    same restricted unpickler reads every pickle of the file.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = [_Unpickler(fh, None).load() for _ in range(3)]
            if head[0] != _LEGACY_MAGIC or head[1] != _LEGACY_PROTOCOL or not isinstance(head[2], dict):
                raise SourceError(f"{path}: not a legacy PyTorch file (bad magic number or protocol).")
            if head[2].get("little_endian") is False:
                raise SourceError(f"{path}: big-endian legacy PyTorch files are not supported.")
            unpickler = _Unpickler(fh, None)
            try:
                root = unpickler.load()
            except Exception:
                if not unpickler.hostile:
                    raise
                root = None
            _refuse_hostile(path, unpickler)
            keys = _Unpickler(fh, None).load()
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise _Bad("bad storage key list")
            offsets: dict[str, int] = {}
            pos = fh.tell()
            for key in keys:
                ref = unpickler.storages.get(key)
                fh.seek(pos)
                head8 = fh.read(8)
                if len(head8) != 8:
                    raise _Bad(f"truncated before storage {key!r}")
                (numel,) = np.frombuffer(head8, dtype="<i8")
                itemsize = np.dtype(_NUMPY[ref.dtype]).itemsize if ref is not None else 1
                if numel < 0 or (ref is not None and numel < ref.numel) or pos + 8 + int(numel) * itemsize > size:
                    raise _Bad(f"storage {key!r} holds {numel} elements; the file or the pickle says otherwise")
                offsets[key] = pos + 8
                pos += 8 + int(numel) * itemsize
            missing = [k for k in unpickler.storages if k not in offsets]
            if missing:
                raise _Bad(f"storage {missing[0]!r} is missing from the file")
    except (SourceError, UnsafeFileError):
        raise
    except _Bad as exc:
        raise SourceError(f"{path}: corrupt legacy PyTorch file ({exc}).") from None
    except Exception as exc:
        raise SourceError(f"{path}: not a readable legacy PyTorch file ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    return Archive(path, "", root, False, offsets)


# ---------------------------------------------------------------- walking the recorded object


def _state(obj: Any) -> dict:
    state = obj._htsr_state if isinstance(obj, Stub) else None
    if isinstance(state, tuple) and state and isinstance(state[0], dict):  # (dict state, slot state)
        state = state[0]
    return state if isinstance(state, dict) else {}


def is_module(obj: Any) -> bool:
    """A stand-in for an ``nn.Module`` (eager pickle) or a TorchScript module."""
    if not isinstance(obj, Stub):
        return False
    state = _state(obj)
    if isinstance(state.get("_modules"), dict) and isinstance(state.get("_parameters"), dict):
        return True
    return obj._htsr_global.startswith("__torch__.") and "training" in state


def _children(obj: Any) -> list[tuple[str, Any]]:
    state = _state(obj)
    if isinstance(state.get("_modules"), dict):
        return [(str(k), v) for k, v in state["_modules"].items() if is_module(v)]
    return [(str(k), v) for k, v in state.items() if is_module(v)]


def _own_tensors(obj: Any) -> dict[str, TensorRef]:
    """A module's own state-dict tensors: parameters, then persistent buffers (eager); tensor attributes (TorchScript)."""
    state = _state(obj)
    params, buffers = state.get("_parameters"), state.get("_buffers")
    if isinstance(params, dict):
        out = {str(k): v for k, v in params.items() if isinstance(v, TensorRef)}
        transient = state.get("_non_persistent_buffers_set")
        skip = {str(n) for n in transient} if isinstance(transient, (set, frozenset, list, tuple)) else set()
        if isinstance(buffers, dict):
            out.update((str(k), v) for k, v in buffers.items() if isinstance(v, TensorRef) and str(k) not in skip)
        return out
    return {str(k): v for k, v in state.items() if isinstance(v, TensorRef)}


_MAX_KEYS = 1 << 20


def module_state_dict(root: Any, origin: str) -> tuple[dict[str, TensorRef], dict[str, str]]:
    """The state dict a pickled module (eager or TorchScript) would give, without running it.

    Returns ``(key → tensor, key → class name of the module that holds it)``, keys in
    ``module.state_dict()`` order: each module's own tensors, then its children's
    (a submodule shared by two parents appears under both prefixes, as in torch).
    """
    tensors: dict[str, TensorRef] = {}
    owners: dict[str, str] = {}
    stack: list[tuple[str, Any, tuple[int, ...]]] = [("", root, ())]
    while stack:
        prefix, mod, path = stack.pop()
        if id(mod) in path or len(path) > _MAX_DEPTH:
            continue  # a cycle (a hostile pickle) or absurd nesting
        for name, t in _own_tensors(mod).items():
            key = f"{prefix}{name}"
            tensors[key] = t
            owners[key] = mod._htsr_global.replace("__torch__.", "", 1)
        if len(tensors) > _MAX_KEYS:
            raise SourceError(f"{origin}: the pickled module names more than {_MAX_KEYS} tensors.")
        for child, sub in reversed(_children(mod)):
            stack.append((f"{prefix}{child}.", sub, (*path, id(mod))))
    return tensors, owners


def module_entries(archive: Archive, root: Any) -> list[Entry]:
    """Entries of a whole pickled module: its state dict, read as a state-dict file is.

    The layer type comes from the class of the module holding each tensor
    (:func:`htsr.sources.base.layer_type_from_class`), so an ``nn.Embedding`` is an
    embedding whatever its name; ids and names are those of the module's state dict.
    """
    tensors, owners = module_state_dict(root, str(archive.path))
    entries = state_dict_entries(archive, tensors)
    return [dataclasses.replace(e, layer_type=layer_type_from_class(owners[e.key], e.key, e.shape)) for e in entries]


def state_dict_entries(archive: Archive, mapping: dict, keys: list[str] | None = None) -> list[Entry]:
    """Entries of a state dict of TensorRefs (natural key order unless ``keys`` gives it); ties noted."""
    tensors = {str(k): v for k, v in mapping.items() if isinstance(v, TensorRef)}
    order = order_keys(tensors) if keys is None else keys
    ties = Ties()
    out = []
    origin = str(archive.path)
    for key in order:
        if key not in tensors:
            raise SourceError(f"{origin}: the index names tensor {key!r}, which the file does not hold.")
        t = tensors[key]
        note = ties.note(t.ident if math.prod(t.shape) > 0 else None, key)
        out.append(Entry(key, t.shape, t.dtype, origin, functools.partial(archive.load, t, f"{key!r} in {origin}"),
                         note=note))
    return out


_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "ema")


def find_weights(root: Any, origin: str) -> tuple[str, Any]:
    """``('module', stub)`` or ``('state_dict', dict)`` inside a checkpoint object."""
    obj = root
    for _ in range(5):
        if is_module(obj):
            return "module", obj
        if isinstance(obj, dict):
            if any(isinstance(v, TensorRef) for v in obj.values()):
                return "state_dict", obj
            inner = next((obj[k] for k in _CHECKPOINT_KEYS if isinstance(obj.get(k), (dict, Stub))), None)
            if inner is None:
                break
            obj = inner
            continue
        break
    raise SourceError(f"{origin}: holds no module or state dict of tensors "
                      f"(found {type(obj).__name__ if not isinstance(obj, Stub) else obj._htsr_global}).")


# ---------------------------------------------------------------- the reader protocol (sources/registry.py)


def sniff_zip(path: Path, head: bytes) -> bool:
    """A zip archive with a ``data.pkl`` member: ``torch.save`` (new format) or ``torch.jit.save``."""
    return head[:4] == b"PK\x03\x04" and is_torch_zip(path)


def sniff_legacy(path: Path, head: bytes) -> bool:
    """A pre-zip ``torch.save`` file: a pickle whose first object is torch's magic number."""
    return head[:1] == b"\x80" and is_legacy(path)


def open_archive(archive: Archive, extra_rows: bool = True) -> Source:
    """The rows of a read archive: a whole module's state dict, or the state dict it holds."""
    from .keyvalue import keyvalue_tensors

    path = archive.path
    kind, obj = find_weights(archive.root, str(path))
    if kind == "module":
        entries = module_entries(archive, obj)
        if not entries:
            raise SourceError(f"{path}: the pickled module holds no weight tensors.")
        what = obj._htsr_global.replace("__torch__.", "", 1)
        return Source(f"{path} ({what}, pickled module)", tuple(keyvalue_tensors(entries, extra_rows)), "torch-file")
    return Source(str(path), tuple(keyvalue_tensors(state_dict_entries(archive, obj), extra_rows)), "torch-file")


def open_zip(path: Path, extra_rows: bool = True) -> Source:
    return open_archive(read_archive(path), extra_rows)


def open_legacy(path: Path, extra_rows: bool = True) -> Source:
    return open_archive(read_legacy(path), extra_rows)
