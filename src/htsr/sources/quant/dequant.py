"""Pure-numpy dequantizers: packed codes and their scales → the float32 matrix the model computes with.

Each function takes the stored arrays (as read from the file) and returns the
matrix in the layout the model multiplies with (``[out_features, in_features]``
for a linear layer). They are written from the documented layouts of each
scheme (``docs/formats.md`` cites them); none imports a quantization library.

Memory: the output float32 matrix is allocated once and filled in row blocks,
so a layer holds its packed form, its float32 matrix and one block of
intermediates (``_BLOCK`` codes), never an int64 copy of the whole matrix.

Every inconsistency raises :class:`~htsr.errors.LayerError` with a one-line
message; callers prefix the layer's name.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ...errors import LayerError

_BLOCK = 1 << 18  # codes decoded per step

#: FP4 (E2M1) values of the 16 codes, as the OCP MX specification defines them (MXFP4).
FP4_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)

#: AWQ's 4-bit interleave: nibble i of a packed int32 holds output column ``8c + AWQ_ORDER[i]``.
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def packed_words(count: int, bits: int) -> int:
    """Number of 32-bit words that hold ``count`` codes of ``bits`` bits, densely packed."""
    return -(-count * bits // 32)


def unpack_stream(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Codes of a dense little-endian bit stream along the last axis: code k sits at bits ``k·bits``.

    This is the layout of GPTQ (2, 3, 4, 8 bits; the 3-bit codes straddle words),
    AWQ before its interleave, compressed-tensors' ``pack_to_int32``, and MLX.

    Parameters
    ----------
    words : int32 or uint32 array, shape ``(..., n_words)``
    bits : int
        1 to 8.
    count : int
        Codes wanted per row (``n_words·32/bits`` or fewer).

    Returns
    -------
    uint8 array, shape ``(..., count)``

    Examples
    --------
    >>> w = np.array([[0x87654321]], dtype=np.uint32)
    >>> unpack_stream(w, 4, 8).tolist()
    [[1, 2, 3, 4, 5, 6, 7, 8]]
    """
    w = np.ascontiguousarray(words).view(np.uint32)
    lead, n = w.shape[:-1], w.shape[-1]
    if count > n * 32 // bits:
        raise LayerError(f"{n} packed words hold {n * 32 // bits} {bits}-bit codes, not {count}")
    if bits in (2, 4, 8):  # codes never straddle a byte: split the little-endian bytes
        per = 8 // bits
        raw = w.astype("<u4", copy=False).view(np.uint8).reshape((*lead, n * 4))
        if per == 1:
            return raw[..., :count].copy()
        out8 = np.empty((*lead, n * 4, per), dtype=np.uint8)
        for k in range(per):
            np.bitwise_and(raw >> (k * bits), (1 << bits) - 1, out=out8[..., k])
        return out8.reshape((*lead, n * 32 // bits))[..., :count]
    groups = -(-n // bits)
    if groups * bits != n:
        w = np.concatenate([w, np.zeros((*lead, groups * bits - n), np.uint32)], axis=-1)
    w = w.reshape((*lead, groups, bits))
    out = np.empty((*lead, groups, 32), dtype=np.uint8)
    mask = np.uint32((1 << bits) - 1)
    for k in range(32):
        i, o = divmod(k * bits, 32)
        v = w[..., i] >> np.uint32(o)
        if o + bits > 32:
            v = v | (w[..., i + 1] << np.uint32(32 - o))
        out[..., k] = v & mask
    return out.reshape((*lead, groups * 32))[..., :count]


def _blocks(total: int, width: int, multiple: int = 1) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row blocks of about ``_BLOCK`` elements, each a multiple of ``multiple`` rows."""
    step = max(multiple, (_BLOCK // max(width, 1)) // multiple * multiple)
    for start in range(0, total, step):
        yield start, min(start + step, total)


def fp8_scaled(codes: np.ndarray, scale: np.ndarray, block: tuple[int, int] | None = None) -> np.ndarray:
    """Decoded float8 (already float32, shape ``(out, in)``) times its scale.

    ``scale`` is a scalar (per tensor), ``(out, 1)`` / ``(out,)`` (per channel),
    or, with ``block = (bo, bi)``, ``(ceil(out/bo), ceil(in/bi))``: entry ``[i, j]``
    of the matrix is multiplied by ``scale[i // bo, j // bi]`` (DeepSeek-V3's
    ``weight_scale_inv``, which despite its name multiplies).
    """
    w = np.asarray(codes, dtype=np.float32)
    s = np.asarray(scale, dtype=np.float32)
    if block is None:
        s = s.reshape(-1, 1) if s.size > 1 else s.reshape(())
        if w.flags.writeable and w.flags.owndata:  # the decoded codes are ours: scale in place
            return np.multiply(w, s, out=w)
        return w * s
    bo, bi = block
    out = np.empty(w.shape, dtype=np.float32)
    cols = np.repeat(np.arange(s.shape[1]), bi)[: w.shape[1]]
    for r0, r1 in _blocks(w.shape[0], w.shape[1], bo):
        rows = np.arange(r0, r1) // bo
        out[r0:r1] = w[r0:r1] * s[rows][:, cols]
    return out


def gptq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, g_idx: np.ndarray, bits: int,
         zero_offset: int) -> np.ndarray:
    """GPTQ (AutoGPTQ / GPTQModel layout) → ``W`` of shape ``(out, in)``.

    ``qweight`` int32 ``(in·bits/32, out)``: codes packed along the input
    dimension, a little-endian bit stream per column. ``qzeros`` int32
    ``(groups, ceil(out·bits/32))`` packed along the output dimension,
    ``scales`` ``(groups, out)``, ``g_idx`` the group of each input row (act-order
    permutes it). ``W[o, i] = scales[g, o] · (q[i, o] − (z[g, o] + zero_offset))``
    with ``g = g_idx[i]``; ``zero_offset`` is 1 for the v1 checkpoint format
    (zeros stored minus one) and 0 for v2.
    """
    n_in, out = g_idx.shape[0], qweight.shape[1]
    zeros = unpack_stream(qzeros, bits, out).astype(np.float32) + np.float32(zero_offset)
    s = np.asarray(scales, dtype=np.float32)
    g = np.asarray(g_idx, dtype=np.int64)
    if g.size and (g.min() < 0 or g.max() >= s.shape[0]):
        raise LayerError(f"g_idx values must lie in [0, {s.shape[0]}) (the groups of 'scales'); "
                         f"found {int(g.min())}..{int(g.max())}")
    wt = np.empty((n_in, out), dtype=np.float32)  # W transposed; returned as a view
    words_per = bits  # `bits` words hold 32 codes: blocks of whole word groups
    qw = np.ascontiguousarray(qweight).view(np.uint32)
    for w0, w1 in _blocks(qw.shape[0], out * 32 // bits, words_per):
        i0 = w0 * 32 // bits
        i1 = min(w1 * 32 // bits, n_in)
        codes = unpack_stream(qw[w0:w1].T, bits, i1 - i0).T  # (i1-i0, out)
        gi = g[i0:i1]
        if gi.size and np.all(gi[1:] >= gi[:-1]):  # groups in order: broadcast each group's row of scales
            cuts = np.flatnonzero(np.diff(gi)) + 1
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, gi.size]):
                np.multiply(codes[a:b] - zeros[gi[a]], s[gi[a]], out=wt[i0 + a:i0 + b])
        else:  # act-order: any row may be in any group
            wt[i0:i1] = (codes.astype(np.float32) - zeros[gi]) * s[gi]
    return wt.T


def awq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """AWQ GEMM layout (4 bits) → ``W`` of shape ``(out, in)``.

    ``qweight`` int32 ``(in, out/8)``: eight codes per word along the output
    dimension in AWQ's interleaved order (:data:`AWQ_ORDER`); ``qzeros`` int32
    ``(in/group, out/8)`` packed the same way; ``scales`` ``(in/group, out)``.
    ``W[o, i] = scales[i // group, o] · (q[i, o] − z[i // group, o])``.
    """
    n_in, out = qweight.shape[0], scales.shape[1]
    inverse = np.argsort(AWQ_ORDER)  # column 8c+m is nibble inverse[m]
    perm = (np.arange(out) // 8) * 8 + inverse[np.arange(out) % 8]
    zeros = unpack_stream(qzeros, 4, out)[:, perm].astype(np.float32)
    s = np.asarray(scales, dtype=np.float32)
    wt = np.empty((n_in, out), dtype=np.float32)
    for r0, r1 in _blocks(n_in, out):
        codes = unpack_stream(qweight[r0:r1], 4, out)[:, perm]
        g = np.arange(r0, r1) // group_size
        wt[r0:r1] = (codes.astype(np.float32) - zeros[g]) * s[g]
    return wt.T


def bnb_int8(weight: np.ndarray, scb: np.ndarray) -> np.ndarray:
    """bitsandbytes LLM.int8 → ``W = weight · SCB[:, None] / 127`` (row-wise absmax scaling)."""
    s = np.asarray(scb, dtype=np.float32).reshape(-1, 1) / np.float32(127.0)
    out = np.empty(weight.shape, dtype=np.float32)
    for r0, r1 in _blocks(weight.shape[0], weight.shape[1]):
        out[r0:r1] = weight[r0:r1].astype(np.float32) * s[r0:r1]
    return out


def bnb_absmax(absmax: np.ndarray, nested: tuple[np.ndarray, np.ndarray, int, float] | None) -> np.ndarray:
    """The per-block absmax of bitsandbytes 4-bit, undoing the nested (double) quantization when present.

    ``nested = (nested_absmax, nested_quant_map, nested_blocksize, nested_offset)``: the stored
    absmax are 8-bit codes; ``absmax[j] = quant_map2[code[j]] · nested_absmax[j // blocksize2] + offset``.
    """
    if nested is None:
        return np.asarray(absmax, dtype=np.float32).ravel()
    amax2, qmap2, bs2, offset = nested
    codes = np.asarray(absmax).ravel().view(np.uint8)
    blocks = np.arange(codes.size) // bs2
    return (np.asarray(qmap2, np.float32)[codes] * np.asarray(amax2, np.float32).ravel()[blocks]
            + np.float32(offset))


def bnb_4bit(packed: np.ndarray, absmax: np.ndarray, quant_map: np.ndarray, blocksize: int,
             shape: tuple[int, int]) -> np.ndarray:
    """bitsandbytes nf4/fp4 → ``W`` of ``shape``.

    ``packed`` uint8, two codes per byte, the first in the high nibble;
    element n is ``quant_map[code_n] · absmax[n // blocksize]`` (flat, row-major).
    """
    n = shape[0] * shape[1]
    flat = np.asarray(packed).reshape(-1).view(np.uint8)
    qmap = np.asarray(quant_map, dtype=np.float32).ravel()
    out = np.empty(n, dtype=np.float32)
    step = max(2 * blocksize, (_BLOCK // (2 * blocksize)) * 2 * blocksize)
    for e0 in range(0, n, step):
        e1 = min(e0 + step, n)
        b = flat[e0 // 2: (e1 + 1) // 2]
        codes = np.empty(2 * b.size, dtype=np.uint8)
        codes[0::2] = b >> 4
        codes[1::2] = b & 0x0F
        out[e0:e1] = qmap[codes[: e1 - e0]] * absmax[np.arange(e0, e1) // blocksize]
    return out.reshape(shape)


def ct_int(packed: np.ndarray, bits: int, shape: tuple[int, int], scale: np.ndarray,
           zero: np.ndarray | None) -> np.ndarray:
    """compressed-tensors pack-quantized → ``W`` of ``shape``.

    ``packed`` int32 ``(out, ceil(in·bits/32))``: the codes plus ``2**(bits-1)``
    (unsigned), a dense little-endian bit stream per row. ``scale`` ``(out, G)``
    (G = 1: per channel; else groups of ``in/G`` columns); ``zero`` the signed
    zero point of the same shape, or None (symmetric).
    ``W[o, i] = scale[o, g] · (q[o, i] − zero[o, g])``, ``g = i // (in/G)``.
    """
    rows, cols = shape
    s = np.asarray(scale, dtype=np.float32).reshape(rows, -1)
    z = None if zero is None else np.asarray(zero, dtype=np.float32).reshape(rows, -1)
    group = -(-cols // s.shape[1])
    gcol = np.arange(cols) // group
    offset = np.float32(1 << (bits - 1))
    out = np.empty(shape, dtype=np.float32)
    for r0, r1 in _blocks(rows, cols):
        q = unpack_stream(packed[r0:r1], bits, cols).astype(np.float32) - offset
        if z is not None:
            q -= z[r0:r1][:, gcol]
        out[r0:r1] = q * s[r0:r1][:, gcol]
    return out


def int_scaled(weight: np.ndarray, scale: np.ndarray, zero: np.ndarray | None) -> np.ndarray:
    """Unpacked integer codes (int8 …) with a per-tensor, per-channel ``(out, 1)`` or group ``(out, G)`` scale."""
    rows, cols = weight.shape
    s = np.asarray(scale, dtype=np.float32).reshape(rows if np.size(scale) > 1 else 1, -1)
    z: np.ndarray | None = None if zero is None else np.asarray(zero, dtype=np.float32).reshape(s.shape)
    gcol = np.arange(cols) // -(-cols // s.shape[1])
    out = np.empty(weight.shape, dtype=np.float32)
    for r0, r1 in _blocks(rows, cols):
        sr = s if s.shape[0] == 1 else s[r0:r1]
        q = weight[r0:r1].astype(np.float32)
        if z is not None:
            q -= (z if z.shape[0] == 1 else z[r0:r1])[:, gcol]
        out[r0:r1] = q * sr[:, gcol]
    return out


def mlx_affine(weight: np.ndarray, scales: np.ndarray, biases: np.ndarray, bits: int, group: int) -> np.ndarray:
    """MLX affine quantization → ``W`` of shape ``(out, in)``.

    ``weight`` uint32 ``(out, in·bits/32)``, a dense little-endian bit stream per
    row; ``scales`` and ``biases`` ``(out, in/group)``:
    ``W[o, i] = scales[o, i // group] · q[o, i] + biases[o, i // group]``.
    """
    rows = weight.shape[0]
    cols = scales.shape[1] * group
    s = np.asarray(scales, dtype=np.float32)
    b = np.asarray(biases, dtype=np.float32)
    gcol = np.arange(cols) // group
    out = np.empty((rows, cols), dtype=np.float32)
    for r0, r1 in _blocks(rows, cols):
        q = unpack_stream(weight[r0:r1], bits, cols).astype(np.float32)
        out[r0:r1] = q * s[r0:r1][:, gcol] + b[r0:r1][:, gcol]
    return out


def mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """MXFP4 (OCP microscaling, gpt-oss layout) → ``(rows, G·32)``.

    ``blocks`` uint8 ``(rows, G, 16)``: 32 FP4 (E2M1) codes per block, two per
    byte, the first in the low nibble; ``scales`` uint8 ``(rows, G)``: an E8M0
    exponent with bias 127, so each block is multiplied by ``2**(scale − 127)``.
    """
    rows, groups = scales.shape
    out = np.empty((rows, groups * 32), dtype=np.float32)
    for r0, r1 in _blocks(rows, groups * 32):
        b = np.asarray(blocks[r0:r1]).view(np.uint8)
        vals = np.empty((*b.shape[:-1], 32), dtype=np.float32)
        vals[..., 0::2] = FP4_E2M1[b & 0x0F]
        vals[..., 1::2] = FP4_E2M1[b >> 4]
        exp = np.asarray(scales[r0:r1]).view(np.uint8).astype(np.int32) - 127
        vals *= np.ldexp(np.float32(1.0), exp)[..., None].astype(np.float32)
        out[r0:r1] = vals.reshape(r1 - r0, groups * 32)
    return out
