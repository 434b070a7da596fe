"""The readers of model files, in one list with a documented priority, and the one protocol they follow.

A file is recognized by its content, whatever it is called: the first bytes
(and, for zip archives, the member names) are shown to each reader's
``sniff(path, head) -> bool`` in the order of :data:`READERS`; the first that
says yes opens it with ``open_file(path, extra_rows) -> Source``. A file no
reader recognizes is opened by the reader its suffix names (so a damaged
``.safetensors`` gets the safetensors reader's own message); a file with
neither known content nor a known suffix gives one line naming the path.

Priority (``docs/formats.md`` has the table): the exact signatures first —
safetensors, GGUF, HDF5 — then the zip family, told apart by member names
(torch's ``data.pkl``, a ``.keras`` archive's ``model.weights.h5``, ``.npz``'s
``.npy`` members), then pickles (torch's legacy format, then any other pickle
for ``torch.load(weights_only=True)``), a Flax msgpack map, and ONNX last: a
protobuf has no magic number, only a plausible first field.

Adding a format: one module with ``sniff`` and ``open_file``, one line in
:data:`READERS`, its fixtures in ``tests/test_conformance.py``.
Readers' modules are imported only when a file reaches them, so optional
frameworks stay unimported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SourceError

if TYPE_CHECKING:
    from .base import Source

HEAD_BYTES = 64
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".jit", ".ptl")


@dataclass(frozen=True)
class Reader:
    """One file format: where its ``sniff`` and ``open_file`` live, and the suffixes that name it.

    Attributes
    ----------
    name : str
        Shown in ``docs/formats.md`` and in messages.
    module : str
        Module of :mod:`htsr.sources` holding the two functions (imported on first use).
    sniff, open : str
        Function names in ``module``: ``sniff(path, head: bytes) -> bool`` looks at the first
        :data:`HEAD_BYTES` bytes (and may open the file, never reading tensor data);
        ``open(path, extra_rows: bool) -> Source`` lists the weight tensors.
    suffixes : tuple of str
        Lower-case suffixes that choose this reader when no reader recognizes the content.
    numbers_rows : bool
        The format's row ids differ under the reference's numbering (ONNX): ``open`` then
        takes ``reference_ids`` too.
    """

    name: str
    module: str
    sniff: str
    open: str
    suffixes: tuple[str, ...] = ()
    numbers_rows: bool = False

    def _func(self, attr: str) -> Callable[..., Any]:  # a module function
        return getattr(importlib.import_module(f"htsr.sources.{self.module}"), attr)

    def recognizes(self, path: Path, head: bytes) -> bool:
        return bool(self._func(self.sniff)(path, head))

    def read(self, path: Path, extra_rows: bool = True, reference_ids: bool = False) -> Source:
        if self.numbers_rows:
            return self._func(self.open)(path, extra_rows, reference_ids)
        return self._func(self.open)(path, extra_rows)


# the priority order: the first reader whose sniff says yes reads the file
READERS: tuple[Reader, ...] = (
    Reader("safetensors", "safetensors_file", "sniff", "open_file", (".safetensors",)),
    Reader("GGUF", "gguf_file", "sniff", "open_file", (".gguf",)),
    Reader("HDF5 (Keras .h5, .weights.h5)", "keras_source", "sniff_hdf5", "open_file", (".h5", ".hdf5")),
    Reader("torch zip (torch.save, TorchScript)", "torch_pickle", "sniff_zip", "open_zip"),
    Reader("Keras archive (.keras)", "keras_source", "sniff_archive", "open_file", (".keras",)),
    Reader("npz", "npz_file", "sniff", "open_file", (".npz",)),
    Reader("torch legacy (torch.save before 1.6)", "torch_pickle", "sniff_legacy", "open_legacy"),
    Reader("other pickle (torch.load weights_only)", "torch_source", "sniff_pickle", "open_pickle", TORCH_SUFFIXES),
    Reader("Flax msgpack", "jax_source", "sniff", "open_file", (".msgpack",)),
    Reader("ONNX", "onnx_file", "sniff", "open_file", (".onnx",), numbers_rows=True),
)

@dataclass(frozen=True)
class ObjectReader:
    """One kind of in-memory model: where its ``recognize(obj) -> bool`` and ``open(obj, extra_rows, reference_ids)``
    live (imported on first use, so a framework is imported only once an object of it is in hand)."""

    name: str
    module: str
    recognize: str
    open: str

    def _func(self, attr: str) -> Callable[..., Any]:  # a module function
        return getattr(importlib.import_module(f"htsr.sources.{self.module}"), attr)

    def recognizes(self, obj: object) -> bool:
        return bool(self._func(self.recognize)(obj))

    def read(self, obj: object, extra_rows: bool = True, reference_ids: bool = False) -> Source:
        return self._func(self.open)(obj, extra_rows, reference_ids)


# in-memory models, in priority order; a path goes to READERS, a plain dict of arrays is a state dict
# (sources/__init__.py); each recognizer looks at sys.modules and isinstance only, never imports a framework
OBJECT_READERS: tuple[ObjectReader, ...] = (
    # before torch: a Keras 3 model on the torch backend is also a torch.nn.Module
    ObjectReader("Keras model", "keras_source", "is_keras_model", "open_model"),
    ObjectReader("torch.nn.Module", "torch_source", "is_torch_module", "open_module"),
    ObjectReader("onnx.ModelProto", "onnx_file", "is_onnx_model", "open_model"),
    # before the state-dict rule: a nested dict of arrays (JAX/Flax parameters)
    ObjectReader("parameter pytree (nested dict)", "jax_source", "is_pytree", "open_pytree"),
)


def object_reader(obj: object) -> ObjectReader | None:
    """The first reader of :data:`OBJECT_READERS` that recognizes ``obj``, or None."""
    return next((r for r in OBJECT_READERS if r.recognizes(obj)), None)


KNOWN = ".safetensors, .gguf, .h5/.keras, .bin/.pt/.pth/.ckpt/.jit (PyTorch, TorchScript), .npz, .msgpack (Flax), .onnx"


def read_head(path: Path) -> bytes:
    """The first :data:`HEAD_BYTES` bytes of a regular file (SourceError for a folder, pipe, unreadable file)."""
    from .safetensors_header import require_regular_file

    require_regular_file(path)
    try:
        with open(path, "rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read file: {exc.strerror or exc}.") from None


def reader_for(path: Path) -> Reader:
    """The reader of a file: by content in :data:`READERS` order, else by suffix.

    Raises
    ------
    SourceError
        Neither the content nor the suffix is one htsr reads (one line, naming the path).
    """
    head = read_head(path)
    for reader in READERS:
        if reader.recognizes(path, head):
            return reader
    suffix = path.suffix.lower()
    for reader in READERS:
        if suffix in reader.suffixes:
            return reader
    raise SourceError(
        f"{path}: unknown file type {suffix or '(no extension)'!r}: its content is none htsr reads "
        f"({KNOWN}, Hugging Face folders and LoRA adapter folders)."
    )


def open_file(path: Path, extra_rows: bool = True, reference_ids: bool = False) -> Source:
    """Open one model file with the reader :func:`reader_for` chooses."""
    return reader_for(path).read(path, extra_rows, reference_ids)
