"""Dtypes numpy lacks (bfloat16, float8), decoded with numpy alone."""

from __future__ import annotations

import numpy as np


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 stored as uint16 → float32 (exact: bf16 is float32's top half)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _fp8_table(exp_bits: int, man_bits: int, bias: int, ieee_special: bool) -> np.ndarray:
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> man_bits) & ((1 << exp_bits) - 1)
    man = codes & ((1 << man_bits) - 1)
    frac = man / float(1 << man_bits)
    normal = sign * (1.0 + frac) * np.exp2(exp.astype(np.float64) - bias)
    subnormal = sign * frac * np.exp2(1.0 - bias)
    value = np.where(exp == 0, subnormal, normal)
    top = (1 << exp_bits) - 1
    if ieee_special:  # e5m2: exponent all ones is inf (mantissa 0) or NaN
        value = np.where((exp == top) & (man == 0), sign * np.inf, value)
        value = np.where((exp == top) & (man != 0), np.nan, value)
    else:  # e4m3fn: only S.1111.111 is NaN, no infinities
        value = np.where((exp == top) & (man == (1 << man_bits) - 1), np.nan, value)
    return value.astype(np.float32)


_FP8 = {
    "F8_E4M3": lambda: _fp8_table(4, 3, 7, ieee_special=False),
    "F8_E5M2": lambda: _fp8_table(5, 2, 15, ieee_special=True),
}
_FP8_CACHE: dict[str, np.ndarray] = {}


def fp8_to_float32(raw: np.ndarray, kind: str) -> np.ndarray:
    """Decode float8 bytes (``F8_E4M3`` or ``F8_E5M2``) through a 256-entry table."""
    table = _FP8_CACHE.get(kind)
    if table is None:
        table = _FP8_CACHE[kind] = _FP8[kind]()
    return table[raw.view(np.uint8)]
