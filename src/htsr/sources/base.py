"""The one record every source yields: a weight tensor, loaded on demand."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from ..config import LayerType


@dataclass(frozen=True)
class WeightTensor:
    """One layer's weight, described without being read.

    Attributes
    ----------
    layer_id : int
        The reference's id: the module's index in ``model.modules()``, or the
        1-based count of ``.weight`` keys for key-value sources.
    name, longname : str
        Short and dotted names (``query``, ``encoder.layer.0.attention.self.query``).
    layer_type : LayerType
    shape : tuple of int
    dtype : str
        The stored dtype's name (``float32``, ``bfloat16`` …).
    origin : str
        The file (or ``<module>`` / ``<dict>``) the tensor comes from; named in errors.
    key : str
        The key inside ``origin``.
    bias : callable or None
        ``bias() -> np.ndarray`` reads the layer's bias (the module's ``bias`` or the
        ``<name>.bias`` key) when there is one; used by :func:`htsr.compare`.
    note : str
        Non-empty: the tensor is listed but not analyzed, for this reason (a tied duplicate …).
    extra : bool
        A row the reference does not have (RNN gates, attention q/k/v; ``sources/splits.py``).
    num_components : int or None
        When set, only the largest ``num_components`` eigenvalues form the ESD: the
        reference's truncated SVD of a LoRA update of rank r (``peft=``).
    load : callable
        ``load() -> np.ndarray`` reads the tensor. For in-memory sources it is a
        read-only view of the user's tensor (no copy): consumers copy it
        (``matrices.as_float``) and can never write through it.
    note : str
        Why the tensor is not analyzed (a tied duplicate), or empty.
    stored : callable or None
        ``stored() -> StoredMatrix``: the 2-D tensor memory-mapped in its stored
        dtype and decoded one block at a time (file sources; None otherwise).
        Large matrices are analyzed from it in bounded memory (:mod:`htsr.blocked`).
    storage : str
        What the file stores when it is not the float matrix itself (``gptq-int4/g128``,
        ``fp8_e4m3/block128`` …: :mod:`htsr.sources.quant`); empty for plain values
        (the ``storage`` column then shows the dtype: ``bf16``, ``f32`` …).
    aux : tuple of str
        Keys consumed as auxiliaries of this weight (scales, zero points, ``g_idx``, absmax …):
        listed by ``describe()`` as 'auxiliary' rows, never analyzed.
    """

    layer_id: int
    name: str
    longname: str
    layer_type: LayerType
    shape: tuple[int, ...]
    dtype: str
    origin: str
    key: str
    load: Callable[[], np.ndarray] = field(repr=False, compare=False)
    note: str = ""
    bias: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)
    extra: bool = False  # a row htsr adds and the reference does not have (sources/splits.py)
    num_components: int | None = None  # analyze only the largest k eigenvalues (PEFT rows, as the reference)
    stored: Callable[[], StoredMatrix] | None = field(default=None, repr=False, compare=False)
    storage: str = ""  # what the file stores when it is not the float matrix itself ('fp8_e4m3/block128', 'gptq-int4/g128' …)
    aux: tuple[str, ...] = ()  # keys consumed as auxiliaries of this weight (scales, zero points, g_idx, absmax …)

    def identity(self) -> dict:
        """``layer_id, name, longname, layer_type`` (the type's string value): the columns that name a layer."""
        return {"layer_id": self.layer_id, "name": self.name, "longname": self.longname,
                "layer_type": self.layer_type.value}

    @property
    def where(self) -> str:
        """'layer <longname> (key in file), shape (a, b)' for error messages."""
        loc = self.origin if self.key in ("", self.longname) else f"{self.key!r} in {self.origin}"
        return f"layer {self.longname} ({loc}), shape {self.shape}"


_NUM = re.compile(r"(\d+)")


def natural_key(key: str) -> tuple:
    """Sort key putting ``layers.2`` before ``layers.10``."""
    return tuple(int(p) if p.isdigit() else p for p in _NUM.split(key))


def layer_type_from_shape(key: str, shape: tuple[int, ...]) -> LayerType:
    """Layer type of a key-value tensor, from its rank and name."""
    ndim = len(shape)
    lowered = key.lower()
    if ndim == 2:
        if "embed" in lowered or "wte" in lowered.split(".") or "wpe" in lowered.split("."):
            return LayerType.EMBEDDING
        return LayerType.DENSE
    if ndim == 3:
        return LayerType.CONV1D
    if ndim == 4:
        return LayerType.CONV2D
    if ndim == 1 and "norm" in lowered:
        return LayerType.NORM
    return LayerType.OTHER


_CLASS_NEEDLES = (("linear", LayerType.DENSE), ("conv1d", LayerType.CONV1D), ("conv2d", LayerType.CONV2D),
                  ("embedding", LayerType.EMBEDDING), ("norm", LayerType.NORM))


def layer_type_from_class(class_name: str, key: str = "", shape: tuple[int, ...] | None = None) -> LayerType:
    """Layer type of a module from its class's dotted name (``torch.nn.modules.linear.Linear`` …).

    The reference's rule: a substring of the lower-cased type name. When none
    matches, the key-value rule (:func:`layer_type_from_shape`) when a shape is
    given, else ``OTHER``.

    >>> layer_type_from_class("torch.nn.modules.sparse.Embedding").value, layer_type_from_class("Block", "p.weight", (3, 4)).value
    ('embedding', 'dense')
    """
    lowered = class_name.lower()
    for needle, ltype in _CLASS_NEEDLES:
        if needle in lowered:
            return ltype
    return layer_type_from_shape(key, shape) if shape is not None else LayerType.OTHER


class Ties:
    """Marks a tensor that is the very same data as an earlier one (tied weights): analyzed once.

    >>> ties = Ties()
    >>> ties.note(("storage", 0), "embed"), ties.note(("storage", 0), "lm_head"), ties.note(None, "x")
    ('', 'tied: same tensor as embed', '')
    """

    def __init__(self) -> None:
        self._first: dict[Hashable, str] = {}

    def note(self, ident: Hashable | None, name: str) -> str:
        """'' the first time ``ident`` is seen (or when it is None), else the tie note naming the first."""
        if ident is None:
            return ""
        if ident in self._first:
            return f"tied: same tensor as {self._first[ident]}"
        self._first[ident] = name
        return ""


class StoredMatrix:
    """A 2-D tensor read in blocks: the raw data stays in its file (or array) in its stored dtype.

    Each call to :meth:`rows` or :meth:`cols` maps the data, decodes only the
    requested block (bfloat16 and float8 to float32, other dtypes as stored) and
    unmaps it again, so the memory held is one decoded block, not the tensor.

    Parameters
    ----------
    shape : (rows, cols)
    dtype : str
        The stored dtype's name (``bfloat16``, ``float16`` …), for messages.
    open_raw : callable
        ``open_raw() -> ndarray``: the raw (undecoded) data, shape ``shape``, typically
        a fresh read-only ``numpy.memmap``.
    decode : callable
        Raw block → decoded block (identity for numpy dtypes).

    Examples
    --------
    >>> import numpy as np
    >>> m = StoredMatrix.from_array(np.arange(12.0).reshape(4, 3))
    >>> m.rows(1, 3).tolist(), m.cols(2, 3).ravel().tolist()
    ([[3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], [2.0, 5.0, 8.0, 11.0])
    """

    def __init__(self, shape: tuple[int, int], dtype: str, open_raw: Callable[[], np.ndarray],
                 decode: Callable[[np.ndarray], np.ndarray]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self._open = open_raw
        self._decode = decode

    @classmethod
    def from_array(cls, array: np.ndarray) -> StoredMatrix:
        """Wrap an in-memory 2-D array (blocks are views, decoded by ``np.asarray``)."""
        arr = np.asarray(array)
        return cls(arr.shape, arr.dtype.name, lambda: arr, np.asarray)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``, decoded (a new array unless the source is in memory and numpy-typed)."""
        raw = self._open()
        try:
            return self._decode(raw[start:stop])
        finally:
            del raw

    def cols(self, start: int, stop: int) -> np.ndarray:
        """Columns ``start:stop``, decoded."""
        raw = self._open()
        try:
            return self._decode(raw[:, start:stop])
        finally:
            del raw

    def decoded(self) -> np.ndarray:
        """The whole matrix, decoded (float32 for bfloat16/float8; as stored otherwise)."""
        return self.rows(0, self.shape[0])


@dataclass(frozen=True)
class Source:
    """What :func:`htsr.sources.open_source` returns: a description and the weight tensors in row order."""

    description: str
    tensors: tuple[WeightTensor, ...]
    kind: str  # module, mapping, safetensors, folder, npz, torch-file, onnx, gguf, keras, pytree, msgpack, lora
