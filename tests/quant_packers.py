"""Independent packers for the quantized-weight tests, written from each scheme's documented layout.

They build checkpoints the way the quantization libraries lay them out (loops
over bits and words, not htsr's vectorized unpacker), so a round trip through
:mod:`htsr.sources.quant` checks the unpacking against a second implementation.
Used by ``tests/test_quant.py`` and ``tests/data/make/make_quant_table.py``.
"""

from __future__ import annotations

import numpy as np


def pack_bits_le(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned codes along the last axis into int32 words: code k at stream bit k·bits.

    Written bit by bit (GPTQ's 3-bit layout lets a code straddle two words).
    """
    codes = np.asarray(codes, dtype=np.uint64)
    lead, n = codes.shape[:-1], codes.shape[-1]
    n_words = -(-n * bits // 32)
    words = np.zeros(lead + (n_words,), dtype=np.uint64)
    for k in range(n):
        for b in range(bits):
            pos = k * bits + b
            bit = (codes[..., k] >> np.uint64(b)) & np.uint64(1)
            words[..., pos // 32] |= bit << np.uint64(pos % 32)
    return words.astype(np.uint32).view(np.int32)


def quantize_groups(w: np.ndarray, bits: int, group: int, rng: np.random.Generator):
    """Asymmetric min-max quantization of ``w`` (out, in) in groups of ``group`` input columns.

    Returns codes (out, in), scales (in/group, out), zeros (in/group, out) integers.
    """
    out, n_in = w.shape
    g = w.reshape(out, n_in // group, group)
    lo, hi = g.min(-1), g.max(-1)
    qmax = (1 << bits) - 1
    scale = np.maximum(hi - lo, 1e-8) / qmax
    zero = np.clip(np.round(-lo / scale), 0, qmax)
    codes = np.clip(np.round(g / scale[..., None]) + zero[..., None], 0, qmax).reshape(out, n_in)
    return codes.astype(np.int64), scale.T.astype(np.float16), zero.T.astype(np.int64)


def gptq_pack(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, bits: int, v2: bool = False) -> dict:
    """GPTQ tensors: qweight (in·bits/32, out) packed along the input dim, qzeros packed along out.

    v1 stores ``zero − 1`` (AutoGPTQ), v2 the zero itself (GPTQModel ``gptq_v2``).
    """
    qweight = pack_bits_le(codes, bits).T  # codes (out, in): each output's column of codes packed along in
    stored_zero = zeros if v2 else zeros - 1
    return {"qweight": np.ascontiguousarray(qweight), "qzeros": pack_bits_le(stored_zero, bits),
            "scales": scales}


AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def awq_pack(codes_t: np.ndarray) -> np.ndarray:
    """AWQ GEMM: ``codes_t`` (rows, out) → int32 (rows, out/8); word c holds column 8c+AWQ_ORDER[i] at bits 4i."""
    rows, out = codes_t.shape
    packed = np.zeros((rows, out // 8), dtype=np.uint32)
    for c in range(out // 8):
        for i in range(8):
            packed[:, c] |= codes_t[:, 8 * c + AWQ_ORDER[i]].astype(np.uint32) << np.uint32(4 * i)
    return packed.view(np.int32)


FP4 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def mxfp4_pack(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MXFP4 of ``w`` (rows, cols): blocks uint8 (rows, cols/32, 16), scales uint8 (rows, cols/32), and the
    dequantized matrix (nearest FP4 value after a power-of-two scale per block of 32)."""
    rows, cols = w.shape
    g = w.reshape(rows, cols // 32, 32)
    amax = np.abs(g).max(-1)
    exp = np.where(amax > 0, np.floor(np.log2(np.maximum(amax, 1e-30))) - 2, 0).astype(np.int64)  # 6 = 1.5·2²
    table = np.array(FP4)
    scaled = g / np.exp2(exp)[..., None]
    codes = np.abs(scaled[..., None] - table).argmin(-1).astype(np.uint8)
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    deq = (table[codes] * np.exp2(exp)[..., None]).reshape(rows, cols)
    return blocks, (exp + 127).astype(np.uint8), deq
