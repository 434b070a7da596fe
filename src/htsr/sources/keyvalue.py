"""Turn an ordered list of (key, tensor descriptor) into WeightTensors.

The reference numbers state-dict layers by counting every key that ends in
``.weight`` (biases and buffers are skipped), starting at 1; htsr does the same
for every key-value source: dicts, safetensors files and folders, ``.npz`` and
PyTorch state-dict files. Keys follow the index file's order when there is
one, otherwise their natural sort (``layers.2`` before ``layers.10``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from ..config import LayerType
from .base import StoredMatrix, WeightTensor, layer_type_from_shape, natural_key


@dataclass(frozen=True)
class Entry:
    """One key of a key-value source; ``note`` marks a tied duplicate (then it is not analyzed)."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    origin: str
    load: Callable[[], np.ndarray]
    note: str = ""
    layer_type: LayerType | None = None  # None: from the key and rank (layer_type_from_shape)
    stored: Callable[[], StoredMatrix] | None = None
    storage: str = ""  # a dequantized layer: what the file stores (sources/quant)
    aux: tuple[str, ...] = ()  # keys this entry consumed (scales, zero points …)
    name: str = ""  # the row's name when not the key without '.weight' (a quantized layer: 'x' for 'x.qweight')
    row: bool = False  # a weight even though its key does not end in '.weight' (a quantized layer)


def is_weight_key(key: str) -> bool:
    return key == "weight" or key.endswith(".weight")


def order_keys(keys: Iterable[str], index_order: bool = False) -> list[str]:
    keys = list(keys)
    return keys if index_order else sorted(keys, key=natural_key)


def weight_tensors(entries: Iterable[Entry], quant_config: dict | None = None) -> Iterator[WeightTensor]:
    """Yield the weight entries, numbered as the reference numbers state dicts.

    ``entries`` must already be in row order. When no key ends in ``.weight``
    (a plain dict of arrays such as ``{"fc1": W}``), every key is a weight.
    Quantized layers are first folded into one dequantizing entry each
    (:func:`htsr.sources.quant.group_entries`; ``quant_config`` is the checkpoint's
    quantization section, read from the file's folder when None).
    """
    from .quant import group_entries

    entries = group_entries(list(entries), quant_config)
    chosen = [e for e in entries if e.row or is_weight_key(e.key)]
    biases = {e.key[: -len("bias")]: e.load for e in entries if e.key == "bias" or e.key.endswith(".bias")}
    if not chosen:
        chosen = entries
    for layer_id, e in enumerate(chosen, start=1):
        name = e.name or (e.key[: -len(".weight")] if e.key.endswith(".weight") else e.key)
        yield WeightTensor(
            layer_id=layer_id,
            name=name,
            longname=name,
            layer_type=e.layer_type or layer_type_from_shape(e.key, e.shape),
            shape=tuple(int(s) for s in e.shape),
            dtype=e.dtype,
            origin=e.origin,
            key=e.key,
            load=e.load,
            note=e.note,
            bias=(biases.get(e.key[: -len("weight")]) if is_weight_key(e.key)
                  else biases.get(name + ".") if e.row else None),
            stored=e.stored,
            storage=e.storage,
            aux=e.aux,
        )
