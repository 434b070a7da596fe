"""The one record every source yields: a weight tensor, loaded on demand."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

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
