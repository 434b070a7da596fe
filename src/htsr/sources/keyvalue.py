"""Turn an ordered list of (key, tensor descriptor) into WeightTensors.

The reference numbers state-dict layers by counting every key that ends in
``.weight`` (biases and buffers are skipped), starting at 1; htsr does the same
for every key-value source: dicts, safetensors files and folders, ``.npz`` and
PyTorch state-dict files. Keys follow the index file's order when there is
one, otherwise their natural sort (``layers.2`` before ``layers.10``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

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


NOT_A_WEIGHT = "not a layer weight: its key does not end in .weight (a buffer or a free parameter)"


def keyvalue_tensors(entries: Iterable[Entry], extra_rows: bool = True) -> list[WeightTensor]:
    """Every row of a key-value source: :func:`weight_tensors`, then split weights, then the rest.

    The census rule: every tensor of two or more dimensions becomes a row. After
    the ``.weight`` rows (numbered as the reference numbers them) come, numbered
    on from the last of them,

    * the split weights found by key (RNN gate matrices ``weight_ih_l0`` …, cells'
      ``weight_ih``/``weight_hh``, attention ``in_proj_weight``; :mod:`.splits`),
      one row per gate, ``extra=True``;
    * every other tensor of two or more dimensions that no row reads, neither as
      its weight nor as an auxiliary (``aux``), listed with the reason
      :data:`NOT_A_WEIGHT` (a buffer such as a positional table, a parameter
      stored outside ``.weight``).

    ``extra_rows=False`` (the compat class) gives the reference's rows only.
    """
    from .splits import is_split_bias, keyed_pieces, source_param, split_key

    entries = list(entries)
    split = [e for e in entries if split_key(e.key)]
    plain = [e for e in entries if not split_key(e.key) and not is_split_bias(e.key)]
    rows = list(weight_tensors(plain))
    if not extra_rows:
        return rows
    used = {t.key for t in rows} | {k for t in rows for k in t.aux}
    next_id = max((t.layer_id for t in rows), default=0) + 1
    groups: dict[str, dict[str, Entry]] = {}
    for e in split:
        prefix, pname = split_key(e.key) or ("", e.key)
        groups.setdefault(prefix, {})[pname] = e
    for prefix, params in groups.items():
        for pname, shape, load in keyed_pieces(prefix, {p: (e.shape, e.load) for p, e in params.items()}):
            e = params[source_param(pname)]
            full = f"{prefix}.{pname}" if prefix else pname
            rows.append(WeightTensor(layer_id=next_id, name=pname, longname=full, layer_type=LayerType.DENSE,
                                     shape=tuple(int(s) for s in shape), dtype=e.dtype, origin=e.origin,
                                     key=e.key, load=load, note=e.note, extra=True))
            next_id += 1
        used.update(e.key for e in params.values())
    for e in plain:
        if len(e.shape) >= 2 and e.key not in used:
            rows.append(WeightTensor(layer_id=next_id, name=e.key, longname=e.key,
                                     layer_type=e.layer_type or layer_type_from_shape(e.key, e.shape),
                                     shape=tuple(int(s) for s in e.shape), dtype=e.dtype, origin=e.origin,
                                     key=e.key, load=e.load, note=e.note or NOT_A_WEIGHT, stored=e.stored))
            next_id += 1
    return rows
