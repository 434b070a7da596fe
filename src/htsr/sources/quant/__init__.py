"""Quantized weights in key-value files: recognize the scheme, group its tensors, dequantize on demand.

:func:`group_entries` takes the entries of a key-value source (safetensors file
or folder, torch state dict, ``.npz``, dict) in row order and the checkpoint's
quantization settings (``config.json``'s ``quantization_config`` or MLX's
``quantization``; :func:`read_quant_config`) and returns them with every
quantized layer folded into one entry: its shape is the dequantized matrix's,
its ``load`` dequantizes (pure numpy, :mod:`.dequant`), its ``storage`` says what
the file holds (``gptq-int4/g128`` …) and its ``aux`` names the keys it consumed
(scales, zero points, ``g_idx``, absmax, quant maps, block scales), which leave
the list. Nothing is read but a few tiny metadata tensors (bitsandbytes'
``quant_state``, compressed-tensors' ``weight_shape``).

=======================  ==============================================  ==========================
scheme                   keys of layer ``x``                              storage
=======================  ==============================================  ==========================
FP8 per tensor/channel   ``x.weight`` (float8) + ``x.weight_scale``       ``fp8_e4m3/tensor``, ``/channel``
FP8 block (DeepSeek-V3)  ``x.weight`` (float8) + ``x.weight_scale_inv``   ``fp8_e4m3/block128``
GPTQ                     ``x.qweight, x.qzeros, x.scales[, x.g_idx]``     ``gptq-int4/g128``
AWQ (GEMM)               ``x.qweight, x.qzeros, x.scales``                ``awq-int4/g128``
bitsandbytes int8        ``x.weight`` (int8) + ``x.SCB``                  ``bnb-int8``
bitsandbytes 4-bit       ``x.weight`` + ``x.weight.absmax``, ``.quant_map``,  ``bnb-nf4``, ``bnb-fp4``
                         ``.quant_state.bitsandbytes__nf4`` [+ nested]
compressed-tensors       ``x.weight_packed, x.weight_scale, x.weight_shape``  ``ct-int4/g128``
                         [``, x.weight_zero_point``]; int8/fp8 ``x.weight`` + ``x.weight_scale``
MLX affine               ``x.weight`` (uint32) + ``x.scales`` + ``x.biases``  ``mlx-q4/g64``
MXFP4 (gpt-oss)          ``x_blocks`` + ``x_scales``                      ``mxfp4``
=======================  ==============================================  ==========================

A group that does not fit one scheme with certainty becomes a skipped entry
("quantized weights, scheme not recognized: …"); inconsistent metadata (a scale
of the wrong shape, bits outside the scheme's set, a packed length that does
not match) a skipped entry whose reason names the tensor and the expected
shape. The rest of the file is analyzed either way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .detect import QuantError, match_group

__all__ = ["group_entries", "read_quant_config", "plain_storage", "INTEGER_DTYPES", "QuantError"]

INTEGER_DTYPES = frozenset({"bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"})

_PLAIN = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64",
          "float8_e4m3": "fp8_e4m3", "float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}

_CONFIG_FILES = ("config.json", "quantize_config.json", "quant_config.json")
_MAX_CONFIG = 16 * 1024 * 1024


def plain_storage(dtype: str) -> str:
    """The ``storage`` value of a tensor stored as plain values: ``f32``, ``bf16``, ``int8`` … (its dtype).

    >>> plain_storage("bfloat16"), plain_storage("float32"), plain_storage("int8")
    ('bf16', 'f32', 'int8')
    """
    return _PLAIN.get(dtype, dtype)


def read_quant_config(folder: Path) -> dict[str, Any] | None:
    """The quantization settings next to a checkpoint, or None.

    Reads ``config.json`` (``quantization_config``, or MLX's ``quantization``),
    then AutoGPTQ's ``quantize_config.json`` and AutoAWQ's ``quant_config.json``;
    later files fill keys the earlier ones lack. A file that is missing or not
    valid JSON contributes nothing (the scheme is then inferred from shapes alone,
    or the layer is skipped as not recognized).
    """
    merged: dict[str, Any] = {}
    for name in _CONFIG_FILES:
        path = folder / name
        try:
            if not path.is_file() or path.stat().st_size > _MAX_CONFIG:
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if not isinstance(data, dict):
            continue
        if name == "config.json":
            section = data.get("quantization_config")
            if not isinstance(section, dict):
                section = data.get("quantization")
                if isinstance(section, dict):
                    section = dict(section, quant_method=section.get("quant_method", "mlx"))
            data = section if isinstance(section, dict) else {}
        for key, value in data.items():
            merged.setdefault(key, value)
    return merged or None


def _config_for(entries: list) -> dict[str, Any] | None:
    """The quantization settings of the folder of the entries' (first) file, if any."""
    for origin in dict.fromkeys(e.origin for e in entries):
        if origin.startswith("<"):
            continue
        try:
            folder = Path(origin).parent
        except (TypeError, ValueError):
            continue
        return read_quant_config(folder)
    return None


def group_entries(entries: list, quant_config: dict[str, Any] | None = None) -> list:
    """Fold each quantized layer's tensors into one dequantizing entry (see the module docstring).

    Parameters
    ----------
    entries : list of :class:`~htsr.sources.keyvalue.Entry`
        In row order.
    quant_config : dict, optional
        The checkpoint's quantization section; None reads it from the folder of the
        entries' file (:func:`read_quant_config`).

    Returns
    -------
    list of Entry
        The same order; a quantized layer is one entry (``row=True``, ``storage``,
        ``aux``) at its main key's place, its auxiliary keys removed.
    """
    by_key = {e.key: e for e in entries}
    if not any(_maybe_quantized(e) for e in entries):
        return entries
    qcfg = quant_config if quant_config is not None else (_config_for(entries) or {})
    folded: dict[str, list] = {}
    consumed: set[str] = set()
    for e in entries:
        if e.key in consumed or e.key in folded:
            continue
        made = match_group(e, by_key, qcfg)
        if made is None:
            continue
        new_entries, aux = made
        aux = tuple(k for k in aux if k in by_key and k != e.key)
        folded[e.key] = [dataclasses.replace(n, aux=aux) for n in new_entries]
        consumed.update(aux)
    if not folded:
        return entries
    out = []
    for e in entries:
        if e.key in folded:
            out.extend(folded[e.key])
        elif e.key not in consumed:
            out.append(e)
    return out


def _maybe_quantized(e: Any) -> bool:
    key = e.key
    return (key.endswith(("qweight", "weight_packed", "_blocks", "weight_scale", "weight_scale_inv", "SCB",
                          ".absmax", ".scales")))
