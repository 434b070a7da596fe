"""Which quantization scheme a group of keys is, checked against its shapes before anything is read.

:func:`match_group` looks at one key and its siblings (same prefix) and returns
the dequantizing entry (or entries: one per expert for MXFP4) and the auxiliary
keys it consumes, or None when the key is not the main tensor of a quantized
layer. Every shape is checked here, from the headers, so a layer with
inconsistent metadata is skipped with a one-line reason naming the tensor and
the expected shape, and a layer that fits no scheme with certainty is skipped as
"quantized weights, scheme not recognized: …".
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import LayerError
from . import dequant as dq

GPTQ_BITS = (2, 3, 4, 8)
MLX_BITS = (2, 3, 4, 5, 6, 8)
CT_BITS = (2, 3, 4, 8)
_FP8 = {"float8_e4m3": "fp8_e4m3", "float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}
_FLOATS = ("float16", "float32", "float64", "bfloat16")
_MAX_META = 1 << 16  # bytes of a metadata tensor (quant_state JSON, weight_shape) read while grouping


class QuantError(LayerError):
    """Inconsistent quantization metadata of one layer (the layer is skipped, the file still analyzed)."""


def _shape(e: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in e.shape)


def _expect(e: Any, expected: tuple[int, ...], what: str) -> None:
    if _shape(e) != tuple(expected):
        raise QuantError(f"{e.key!r} has shape {_shape(e)}, expected {tuple(expected)} ({what})")


def _bits_from(qcfg: dict, *names: str) -> int | None:
    for name in names:
        value = qcfg.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise QuantError(f"config {name}={value!r} is not an integer number of bits")
            return value
    return None


def _entry(main: Any, name: str, shape: tuple[int, int], storage: str, load: Callable[[], np.ndarray],
           where: str, note: str = "") -> Any:
    def checked() -> np.ndarray:
        try:
            with np.errstate(all="ignore"):
                return load()
        except QuantError:
            raise
        except LayerError as exc:
            raise QuantError(f"invalid: {where}: {exc}") from None
        except (ValueError, IndexError, TypeError) as exc:
            raise QuantError(f"invalid: {where}: inconsistent quantization data ({exc})") from None

    return dataclasses.replace(main, shape=tuple(shape), dtype="float32", load=checked, stored=None,
                               storage=storage, row=True, name=name, note=note)


def _skip(main: Any, name: str, note: str) -> Any:
    return dataclasses.replace(main, row=True, name=name, note=note, stored=None)


_KNOWN = ("qzeros", "scales", "g_idx", "biases", "weight_scale", "weight_scale_inv", "weight_zero_point",
          "weight_shape", "weight_g_idx", "input_scale", "SCB", "weight_format", "weight.absmax",
          "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map",
          "weight.quant_state.bitsandbytes__nf4", "weight.quant_state.bitsandbytes__fp4", "_scales")


def match_group(e: Any, by_key: dict[str, Any], qcfg: dict) -> tuple[list, tuple[str, ...]] | None:
    """The entries replacing ``e`` and the keys they consume, or None when ``e`` is not a quantized layer's main key."""
    key = e.key
    for suffix, matcher in _MATCHERS:
        if not key.endswith(suffix):
            continue
        prefix = key[: -len(suffix)]
        if suffix != "_blocks" and prefix and not prefix.endswith("."):
            continue
        sib = {k: by_key[prefix + k] for k in _KNOWN if prefix + k in by_key and prefix + k != key}
        name = prefix[:-1] if prefix.endswith(".") else (prefix or key)
        try:
            return matcher(e, prefix, name, sib, qcfg)
        except QuantError as exc:
            msg = str(exc)
            if not msg.startswith(("invalid", "quantized")):
                msg = f"invalid quantization metadata: {msg}"
            return [_skip(e, name, msg)], tuple(prefix + k for k in sib)
    return None


def _not_recognized(why: str) -> QuantError:
    return QuantError(f"quantized weights, scheme not recognized: {why}")


# ---------------------------------------------------------------- GPTQ / AWQ
def _qweight(e: Any, prefix: str, name: str, sib: dict, qcfg: dict) -> tuple[list, tuple[str, ...]] | None:
    aux = tuple(prefix + k for k in ("qzeros", "scales", "g_idx") if k in sib)
    if "qzeros" not in sib or "scales" not in sib:
        raise _not_recognized(f"{e.key!r} without {'qzeros' if 'qzeros' not in sib else 'scales'}")
    qw, qz, sc = e, sib["qzeros"], sib["scales"]
    if len(_shape(qw)) != 2 or len(_shape(qz)) != 2 or len(_shape(sc)) != 2:
        raise QuantError(f"{e.key!r}, qzeros and scales must be 2-D; got {_shape(qw)}, {_shape(qz)}, {_shape(sc)}")
    if qw.dtype not in ("int32", "uint32") or qz.dtype not in ("int32", "uint32"):
        raise _not_recognized(f"{e.key!r} of dtype {qw.dtype} (GPTQ and AWQ pack int32)")
    method = str(qcfg.get("quant_method", "")).lower()
    if method == "awq" or (method != "gptq" and "g_idx" not in sib and _shape(qw)[1] * 8 == _shape(sc)[1]
                           and _shape(qw)[1] != _shape(sc)[1]):
        return _awq(e, name, sib, qcfg, aux)
    return _gptq(e, name, sib, qcfg, aux)


def _gptq(e: Any, name: str, sib: dict, qcfg: dict, aux: tuple[str, ...]) -> tuple[list, tuple[str, ...]]:
    qw, qz, sc = e, sib["qzeros"], sib["scales"]
    words, out = _shape(qw)
    groups = _shape(sc)[0]
    _expect(sc, (groups, out), "GPTQ scales: groups × out_features, out_features from qweight")
    gi = sib.get("g_idx")
    bits = _bits_from(qcfg, "bits", "w_bit")
    if bits is None:
        fits = [b for b in GPTQ_BITS if dq.packed_words(out, b) == _shape(qz)[1] and (words * 32) % b == 0
                and (gi is None or words * 32 == _shape(gi)[0] * b)]
        if len(fits) != 1:
            raise _not_recognized(f"GPTQ bits of {e.key!r} cannot be told from the shapes "
                                  f"(candidates {fits or 'none'}); config.json's quantization_config has no 'bits'")
        bits = fits[0]
    if bits not in GPTQ_BITS:
        raise QuantError(f"GPTQ bits={bits} for {e.key!r}, expected one of {GPTQ_BITS}")
    if (words * 32) % bits:
        raise QuantError(f"{e.key!r} has {words} packed rows, not a whole number of {bits}-bit codes "
                         f"(expected a multiple of {bits // math.gcd(bits, 32)} rows)")
    n_in = words * 32 // bits
    _expect(qz, (groups, dq.packed_words(out, bits)), f"GPTQ qzeros: groups × out_features·{bits}/32")
    if gi is not None:
        _expect(gi, (n_in,), f"GPTQ g_idx: in_features = packed rows·32/{bits}")
    if groups < 1 or (n_in % groups and gi is None):
        raise QuantError(f"{sc.key!r} has {groups} groups, which do not divide in_features={n_in}")
    fmt = str(qcfg.get("checkpoint_format", "gptq")).lower()
    if fmt not in ("gptq", "gptq_v2"):
        raise _not_recognized(f"GPTQ checkpoint_format {fmt!r} (htsr reads 'gptq' and 'gptq_v2')")
    offset = 0 if fmt == "gptq_v2" else 1
    gs = qcfg.get("group_size")
    label = f"gptq-int{bits}/g{gs if isinstance(gs, int) and gs > 0 else -(-n_in // groups)}"

    def load() -> np.ndarray:
        g = (np.asarray(gi.load()).reshape(-1) if gi is not None
             else np.arange(n_in) // -(-n_in // groups))
        return dq.gptq(np.asarray(qw.load()), np.asarray(qz.load()), np.asarray(sc.load()), g, bits, offset)

    return [_entry(e, name, (out, n_in), label, load, f"GPTQ {e.key!r}")], aux


def _awq(e: Any, name: str, sib: dict, qcfg: dict, aux: tuple[str, ...]) -> tuple[list, tuple[str, ...]]:
    qw, qz, sc = e, sib["qzeros"], sib["scales"]
    bits = _bits_from(qcfg, "w_bit", "bits") or 4
    if bits != 4:
        raise _not_recognized(f"AWQ with {bits} bits (AWQ's interleaved order is defined for 4 bits)")
    version = str(qcfg.get("version", "gemm")).lower()
    if version != "gemm":
        raise _not_recognized(f"AWQ version {version!r} (htsr reads the GEMM layout)")
    n_in, words = _shape(qw)
    out = words * 8
    groups = _shape(sc)[0]
    _expect(sc, (groups, out), "AWQ scales: groups × out_features, out_features = qweight columns·8")
    _expect(qz, (groups, words), "AWQ qzeros: groups × out_features/8")
    if groups < 1 or n_in % groups:
        raise QuantError(f"{sc.key!r} has {groups} groups, which do not divide in_features={n_in}")
    gs = n_in // groups

    def load() -> np.ndarray:
        return dq.awq(np.asarray(qw.load()), np.asarray(qz.load()), np.asarray(sc.load()), gs)

    return [_entry(e, name, (out, n_in), f"awq-int4/g{gs}", load, f"AWQ {e.key!r}")], aux


# ---------------------------------------------------------------- x.weight with siblings
def _weight(e: Any, prefix: str, name: str, sib: dict, qcfg: dict) -> tuple[list, tuple[str, ...]] | None:
    shape = _shape(e)
    bnb_state = next((k for k in sib if k.startswith("weight.quant_state.bitsandbytes__")), None)
    if bnb_state is not None or "weight.absmax" in sib:
        return _bnb4(e, name, sib, bnb_state, prefix)
    if "SCB" in sib:
        aux = tuple(prefix + k for k in ("SCB", "weight_format") if k in sib)
        if e.dtype != "int8" or len(shape) != 2:
            raise QuantError(f"bitsandbytes int8 {e.key!r} must be a 2-D int8 matrix; got {e.dtype} {shape}")
        _expect(sib["SCB"], (shape[0],), "bitsandbytes SCB: one absmax per output row")
        scb = sib["SCB"]
        return [_entry(e, name, shape, "bnb-int8", lambda: dq.bnb_int8(np.asarray(e.load()), np.asarray(scb.load())),
                       f"bitsandbytes int8 {e.key!r}")], aux
    if ("weight_scale_inv" in sib or "weight_scale" in sib) and e.dtype not in _FLOATS:
        return _scaled(e, prefix, name, sib, qcfg)  # a float weight with a scale is not quantized: left as is
    if e.dtype == "uint32" and "scales" in sib and "biases" in sib:
        return _mlx(e, prefix, name, sib, qcfg)
    return None


def _block_size(qcfg: dict, scale_shape: tuple[int, ...], shape: tuple[int, int], key: str) -> tuple[int, int]:
    """The (rows, cols) block of a block-scaled weight: from the config, else 128×128 when the shapes say so."""
    block = qcfg.get("weight_block_size")
    if block is None:
        for group in (qcfg.get("config_groups") or {}).values():
            weights = group.get("weights") if isinstance(group, dict) else None
            if isinstance(weights, dict) and weights.get("block_structure"):
                block = weights["block_structure"]
    if block is None:
        block = [128, 128]
    if (not isinstance(block, (list, tuple)) or len(block) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise QuantError(f"weight_block_size {block!r} is not two positive integers")
    expected = (-(-shape[0] // block[0]), -(-shape[1] // block[1]))
    if tuple(scale_shape) != expected:
        raise QuantError(f"{key!r} has shape {tuple(scale_shape)}, expected {expected} "
                         f"(one scale per {block[0]}×{block[1]} block of a {shape} weight)")
    return int(block[0]), int(block[1])


def _scaled(e: Any, prefix: str, name: str, sib: dict, qcfg: dict) -> tuple[list, tuple[str, ...]]:
    """``x.weight`` (float8 or int8) with ``weight_scale`` / ``weight_scale_inv`` (+ ``weight_zero_point``)."""
    shape = _shape(e)
    scale_key = "weight_scale_inv" if "weight_scale_inv" in sib else "weight_scale"
    aux = tuple(prefix + k for k in (scale_key, "weight_zero_point", "input_scale", "weight_g_idx") if k in sib)
    sc = sib[scale_key]
    ss = _shape(sc)
    if len(shape) != 2:
        raise _not_recognized(f"{e.key!r} of shape {shape} with {scale_key} (a 2-D weight was expected)")
    kind = _FP8.get(e.dtype) or ("int8" if e.dtype == "int8" else None)
    if kind is None:
        raise _not_recognized(f"{e.key!r} of dtype {e.dtype} with {scale_key}")
    zp = sib.get("weight_zero_point")
    block = None
    if math.prod(ss) == 1:
        label = "tensor"
    elif scale_key == "weight_scale_inv" or (len(ss) == 2 and ss[0] != shape[0]):
        block = _block_size(qcfg, ss, shape, sc.key)
        label = f"block{block[0]}" if block[0] == block[1] else f"block{block[0]}x{block[1]}"
    elif ss in ((shape[0],), (shape[0], 1)):
        label = "channel"
    elif len(ss) == 2 and ss[0] == shape[0] and ss[1] > 0 and shape[1] % ss[1] == 0:
        label = f"g{shape[1] // ss[1]}"
    else:
        raise QuantError(f"{sc.key!r} has shape {ss}, expected (), ({shape[0]}, 1), ({shape[0]}, G) "
                         f"or 128×128 block scales for a {shape} weight")
    if zp is not None:
        if kind in _FP8.values() or block is not None:
            raise _not_recognized(f"{e.key!r}: a zero point with {kind} or block scales")
        if math.prod(_shape(zp)) != math.prod(ss):
            raise QuantError(f"{zp.key!r} has shape {_shape(zp)}, expected {ss} (one zero point per scale)")

    if kind in _FP8.values():
        def load() -> np.ndarray:
            return dq.fp8_scaled(np.asarray(e.load()), np.asarray(sc.load()), block)
        storage = f"{kind}/{label}"
    else:
        def load() -> np.ndarray:
            z = None if zp is None else np.asarray(zp.load())
            return dq.int_scaled(np.asarray(e.load()), np.asarray(sc.load()), z)
        storage = f"{kind}/{label}"
    return [_entry(e, name, shape, storage, load, f"{e.key!r}")], aux


def _bnb4(e: Any, name: str, sib: dict, state_key: str | None, prefix: str) -> tuple[list, tuple[str, ...]]:
    parts = ("weight.absmax", "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map")
    aux = tuple(prefix + k for k in parts + ((state_key,) if state_key else ()) if k in sib)
    missing = [k for k in ("weight.absmax", "weight.quant_map") if k not in sib] + ([] if state_key else ["quant_state"])
    if missing:
        raise _not_recognized(f"bitsandbytes 4-bit {e.key!r} without {prefix}{missing[0]}")
    qtype = str(state_key).rsplit("__", 1)[1]
    state = _read_json(sib[state_key])
    shape = state.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise QuantError(f"{sib[state_key].key!r}: quant_state shape {shape!r} is not a 2-D shape")
    rows, cols = shape
    n = rows * cols
    bs = state.get("blocksize")
    if not isinstance(bs, int) or isinstance(bs, bool) or bs <= 0:
        raise QuantError(f"{sib[state_key].key!r}: blocksize {bs!r} is not a positive integer")
    if math.prod(_shape(e)) != (n + 1) // 2:
        raise QuantError(f"{e.key!r} holds {math.prod(_shape(e))} bytes, expected ({(n + 1) // 2}, 1) "
                         f"(two 4-bit codes per byte of a {tuple(shape)} weight)")
    n_abs = -(-n // bs)
    am, qm = sib["weight.absmax"], sib["weight.quant_map"]
    if math.prod(_shape(am)) != n_abs:
        raise QuantError(f"{am.key!r} has shape {_shape(am)}, expected ({n_abs},) "
                         f"(one absmax per {bs} elements of a {tuple(shape)} weight)")
    if math.prod(_shape(qm)) != 16:
        raise QuantError(f"{qm.key!r} has shape {_shape(qm)}, expected (16,) (one value per 4-bit code)")
    nested = "weight.nested_absmax" in sib or "nested_blocksize" in state
    nbs, offset = 0, 0.0
    if nested:
        nbs, offset = state.get("nested_blocksize", 0), state.get("nested_offset", 0.0)
        if "weight.nested_absmax" not in sib or "weight.nested_quant_map" not in sib:
            raise _not_recognized(f"nested bitsandbytes {e.key!r} without nested_absmax/nested_quant_map")
        if not isinstance(nbs, int) or isinstance(nbs, bool) or nbs <= 0 or not isinstance(offset, (int, float)):
            raise QuantError(f"{sib[state_key].key!r}: nested_blocksize {nbs!r} / nested_offset {offset!r} invalid")
        na, nq = sib["weight.nested_absmax"], sib["weight.nested_quant_map"]
        if math.prod(_shape(na)) != -(-n_abs // nbs):
            raise QuantError(f"{na.key!r} has shape {_shape(na)}, expected ({-(-n_abs // nbs)},)")
        if math.prod(_shape(nq)) != 256:
            raise QuantError(f"{nq.key!r} has shape {_shape(nq)}, expected (256,)")

    def load() -> np.ndarray:
        amax = np.asarray(am.load())
        nest = (np.asarray(na.load()), np.asarray(nq.load()), nbs, float(offset)) if nested else None
        return dq.bnb_4bit(np.asarray(e.load()), dq.bnb_absmax(amax, nest), np.asarray(qm.load()), bs, (rows, cols))

    return [_entry(e, name, (rows, cols), f"bnb-{qtype}", load, f"bitsandbytes {qtype} {e.key!r}")], aux


def _read_json(entry: Any) -> dict:
    if math.prod(_shape(entry)) > _MAX_META:
        raise QuantError(f"{entry.key!r}: quant_state of {math.prod(_shape(entry))} bytes is too large")
    try:
        raw = np.asarray(entry.load()).astype(np.uint8).tobytes()
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError, TypeError) as exc:
        raise QuantError(f"{entry.key!r}: quant_state is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise QuantError(f"{entry.key!r}: quant_state is not a JSON object")
    return data


def _mlx(e: Any, prefix: str, name: str, sib: dict, qcfg: dict) -> tuple[list, tuple[str, ...]]:
    aux = (prefix + "scales", prefix + "biases")
    found = qcfg.get(name)
    per_layer: dict = found if isinstance(found, dict) else {}
    bits = per_layer.get("bits", qcfg.get("bits"))
    group = per_layer.get("group_size", qcfg.get("group_size"))
    if bits is None or group is None:
        raise _not_recognized(f"uint32 {e.key!r} with scales and biases (MLX) but no bits/group_size "
                              "in config.json's 'quantization'")
    if not isinstance(bits, int) or bits not in MLX_BITS:
        raise QuantError(f"MLX bits={bits!r} for {e.key!r}, expected one of {MLX_BITS}")
    if not isinstance(group, int) or isinstance(group, bool) or group <= 0:
        raise QuantError(f"MLX group_size={group!r} for {e.key!r} is not a positive integer")
    shape = _shape(e)
    if len(shape) != 2 or (shape[1] * 32) % bits:
        raise QuantError(f"{e.key!r} has shape {shape}, expected (out, in·{bits}/32) uint32 words")
    n_in = shape[1] * 32 // bits
    if n_in % group:
        raise QuantError(f"{e.key!r}: in_features={n_in} is not a multiple of group_size={group}")
    sc, bi = sib["scales"], sib["biases"]
    _expect(sc, (shape[0], n_in // group), f"MLX scales: out × in/{group}")
    _expect(bi, (shape[0], n_in // group), f"MLX biases: out × in/{group}")

    def load() -> np.ndarray:
        return dq.mlx_affine(np.asarray(e.load()), np.asarray(sc.load()), np.asarray(bi.load()), bits, group)

    return [_entry(e, name, (shape[0], n_in), f"mlx-q{bits}/g{group}", load, f"MLX {e.key!r}")], aux


# ---------------------------------------------------------------- compressed-tensors pack-quantized
def _ct_bits(qcfg: dict) -> set[int]:
    found = set()
    for group in (qcfg.get("config_groups") or {}).values():
        weights = group.get("weights") if isinstance(group, dict) else None
        if isinstance(weights, dict) and isinstance(weights.get("num_bits"), int):
            found.add(weights["num_bits"])
    return found


def _packed(e: Any, prefix: str, name: str, sib: dict, qcfg: dict) -> tuple[list, tuple[str, ...]]:
    aux = tuple(prefix + k for k in ("weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx")
                if k in sib)
    if "weight_scale" not in sib or "weight_shape" not in sib:
        raise _not_recognized(f"{e.key!r} without weight_scale and weight_shape (compressed-tensors)")
    if "weight_g_idx" in sib:
        raise _not_recognized(f"{e.key!r} with weight_g_idx (activation-ordered compressed-tensors)")
    if e.dtype not in ("int32", "uint32") or len(_shape(e)) != 2:
        raise QuantError(f"{e.key!r} must be 2-D int32; got {e.dtype} {_shape(e)}")
    ws = sib["weight_shape"]
    if math.prod(_shape(ws)) != 2:
        raise QuantError(f"{ws.key!r} has shape {_shape(ws)}, expected (2,)")
    rows, cols = (int(v) for v in np.asarray(ws.load()).reshape(-1))
    if rows <= 0 or cols <= 0:
        raise QuantError(f"{ws.key!r} = ({rows}, {cols}) is not a matrix shape")
    words = _shape(e)[1]
    config_bits = _ct_bits(qcfg)
    fits = [b for b in CT_BITS if dq.packed_words(cols, b) == words]
    if len(config_bits) == 1:
        bits = config_bits.pop()
        if bits not in CT_BITS:
            raise QuantError(f"compressed-tensors num_bits={bits} for {e.key!r}, expected one of {CT_BITS}")
    elif len(fits) == 1:
        bits = fits[0]
    else:
        raise _not_recognized(f"bits of {e.key!r} cannot be told (shape {_shape(e)} for a ({rows}, {cols}) "
                              f"weight; candidates {fits or 'none'})")
    _expect(e, (rows, dq.packed_words(cols, bits)), f"{bits}-bit codes of a ({rows}, {cols}) weight, 32/{bits} per int32")
    sc = sib["weight_scale"]
    ss = _shape(sc)
    if len(ss) != 2 or ss[0] != rows or ss[1] < 1 or cols % ss[1]:
        raise QuantError(f"{sc.key!r} has shape {ss}, expected ({rows}, G) with G dividing {cols}")
    label = "channel" if ss[1] == 1 else f"g{cols // ss[1]}"
    zp = sib.get("weight_zero_point")
    if zp is not None:
        zs = _shape(zp)
        if zs not in (ss, (dq.packed_words(rows, bits), ss[1])):
            raise QuantError(f"{zp.key!r} has shape {zs}, expected {ss} or "
                             f"{(dq.packed_words(rows, bits), ss[1])} (packed along the rows)")

    def load() -> np.ndarray:
        z = None
        if zp is not None:
            z = np.asarray(zp.load())
            if _shape(zp) != ss:  # packed along dim 0, offset as the weights
                z = dq.unpack_stream(z.T, bits, rows).T.astype(np.int32) - (1 << (bits - 1))
        return dq.ct_int(np.asarray(e.load()), bits, (rows, cols), np.asarray(sc.load()), z)

    return [_entry(e, name, (rows, cols), f"ct-int{bits}/{label}", load, f"compressed-tensors {e.key!r}")], aux


# ---------------------------------------------------------------- MXFP4
def _blocks(e: Any, prefix: str, name: str, sib: dict, qcfg: dict) -> tuple[list, tuple[str, ...]] | None:
    key = e.key
    base = prefix
    scales = base + "_scales"
    sc = sib.get("_scales")
    if sc is None:
        return None
    bs = _shape(e)
    if e.dtype != "uint8" or sc.dtype != "uint8" or len(bs) not in (3, 4) or bs[-1] != 16:
        raise _not_recognized(f"{key!r} ({e.dtype} {bs}) and {scales!r}: MXFP4 stores uint8 blocks (…, G, 16)")
    _expect(sc, bs[:-1], "MXFP4 scales: one E8M0 exponent per block of 32")
    rows, cols = bs[-3], bs[-2] * 32
    name = base
    if len(bs) == 3:
        return [_entry(e, name, (rows, cols), "mxfp4",
                       lambda: dq.mxfp4(np.asarray(e.load()), np.asarray(sc.load())), f"MXFP4 {key!r}")], (scales,)
    out = []
    blocks_of, scales_of = _expert_reader(e), _expert_reader(sc)
    for k in range(bs[0]):
        def load(k: int = k) -> np.ndarray:
            return dq.mxfp4(blocks_of(k), scales_of(k))
        out.append(_entry(e, f"{name}.{k}", (rows, cols), "mxfp4", load, f"MXFP4 {key!r} expert {k}"))
    return out, (scales,)


def _expert_reader(e: Any) -> Callable[[int], np.ndarray]:
    """``read(k)``: expert ``k`` of a stacked uint8 tensor; from a safetensors file only that expert's bytes
    are mapped and copied (the whole tensor is read otherwise)."""
    from pathlib import Path

    from ..safetensors_header import read_header

    def whole(k: int) -> np.ndarray:
        return np.asarray(e.load()[k])

    if not e.origin.endswith(".safetensors"):
        return whole

    path = Path(e.origin)
    where: list[int] = []  # the tensor's first byte, found once

    def read(k: int) -> np.ndarray:
        if not where:
            header, start, _ = read_header(path)
            info = header.get(e.key, {})
            where.append(start + int(info["data_offsets"][0])
                         if info.get("dtype") == "U8" and tuple(info.get("shape", ())) == _shape(e) else -1)
        if where[0] < 0:
            return whole(k)
        per = math.prod(_shape(e)[1:])
        offset = where[0] + k * per
        mm = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(per,))
        try:
            return np.array(mm).reshape(_shape(e)[1:])
        finally:
            del mm

    return read


_MATCHERS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("qweight", _qweight),
    ("weight_packed", _packed),
    ("_blocks", _blocks),
    ("weight", _weight),
)
