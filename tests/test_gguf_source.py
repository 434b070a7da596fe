"""GGUF files written here with the ``gguf`` package's writer: rows equal the safetensors rows.

F32/F16/BF16/Q8_0/Q4_0 tensors are quantized by ``gguf.quants.quantize`` from known float32 weights, and the
rows are compared with the float32 weights' rows within the error each type allows (stated per type below).
The package cannot quantize K-quants (Q4_K/Q5_K/Q6_K raise ``NotImplementedError``): Q6_K weights are
encoded by this file's own ``encode_q6_k`` and checked against the float32 weights; Q4_K and Q5_K are
written as seeded random blocks with sane scales, whose reference weights are the package's own
dequantization of the same bytes (that checks htsr's layout, naming and ids, not the dequantizer).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.errors import SourceError
from htsr.sources import open_source
from htsr.sources.gguf_file import readable_name

gguf = pytest.importorskip("gguf")
sn = pytest.importorskip("safetensors.numpy")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import quants  # noqa: E402

# the quantization error allowed, per type: (relative alpha, absolute log_norm) against the float32 weights.
# Measured over 8 seeds of power-law-spectrum weights: F16 1.1e-4 / 1.5e-5, BF16 8.7e-4 / 8.1e-5,
# Q8_0 3.6e-3 / 1.3e-4, Q4_0 3.5e-2 / 2.8e-3; the bounds are about 3x those.
TOL = {Q.F32: (0.0, 0.0), Q.F16: (5e-4, 1e-4), Q.BF16: (3e-3, 3e-4), Q.Q8_0: (1.2e-2, 5e-4), Q.Q4_0: (0.1, 1e-2)}


def power_law_matrix(rng, rows, cols):
    """Singular values s_i = 10·i^-0.7 in random bases: a heavy tail whose alpha is a stable statistic."""
    k = min(rows, cols)
    u, _ = np.linalg.qr(rng.standard_normal((rows, k)))
    v, _ = np.linalg.qr(rng.standard_normal((cols, k)))
    return ((u * (10 * np.arange(1, k + 1) ** -0.7)) @ v.T).astype(np.float32)


def write_gguf(path, tensors):
    w = gguf.GGUFWriter(str(path), "llama")
    for name, (array, qtype) in tensors.items():
        if qtype in (Q.F32, Q.F16):
            w.add_tensor(name, array.astype(np.float32 if qtype == Q.F32 else np.float16))
        else:
            w.add_tensor(name, array if array.dtype == np.uint8 else quants.quantize(array, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def k_blocks(rng, rows, cols, qtype):
    """Seeded random K-quant bytes whose float16 scales are finite and moderate."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    scale = lambda n: rng.uniform(0.01, 0.1, (rows, cols // block, n)).astype(np.float16).view(np.uint8)
    if qtype == Q.Q6_K:
        raw[..., size - 2:] = scale(1)  # d at the end
    else:
        raw[..., :4] = scale(2)  # d, dmin at the start
    return raw.reshape(rows, -1)


def encode_q6_k(x: np.ndarray) -> np.ndarray:
    """Q6_K blocks of float32 rows (columns a multiple of 256), written here from the block layout.

    A block of 256 values: 16 groups of 16 share an int8 scale, all share a float16 ``d``; a value is
    ``d·scale·(q − 32)`` with 6-bit ``q``, its low 4 bits in ``ql`` (128 bytes), its high 2 bits in
    ``qh`` (64 bytes). The gguf package cannot write Q6_K; this encoder lets its reader be checked on
    weights with a known answer.
    """
    rows = x.shape[0]
    out = np.zeros((x.size // 256, 210), np.uint8)
    for b, v in enumerate(x.reshape(-1, 256).astype(np.float64)):
        groups = v.reshape(16, 16)
        wanted = np.abs(groups).max(axis=1) / 31.0
        d = np.float16(wanted.max() / 127.0)
        scales = np.clip(np.round(wanted / float(d)), -128, 127).astype(np.int8) if d > 0 else np.zeros(16, np.int8)
        step = float(d) * scales.astype(np.float64)
        q = np.where(step[:, None] != 0, np.clip(np.round(groups / np.where(step == 0, 1, step)[:, None]), -32, 31), 0)
        q = q.reshape(256).astype(np.int64) + 32
        ql, qh = np.zeros(128, np.uint8), np.zeros(64, np.uint8)
        for half in range(2):
            q1, q2, q3, q4 = (q[half * 128 + 32 * k: half * 128 + 32 * (k + 1)] for k in range(4))
            ql[half * 64: half * 64 + 32] = (q1 & 0xF) | ((q3 & 0xF) << 4)
            ql[half * 64 + 32: half * 64 + 64] = (q2 & 0xF) | ((q4 & 0xF) << 4)
            qh[half * 32: half * 32 + 32] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
        out[b] = np.concatenate([ql, qh, scales.view(np.uint8), np.array([d]).view(np.uint8)])
    return out.reshape(rows, -1)


def test_q6_k_weights_equal_the_safetensors_rows_within_the_stated_error(tmp_path):
    """Q6_K (6-bit, per-16 scales). Measured over 9 seeds: relative alpha up to 8.4e-3 (this seed), log_norm up
    to 4.6e-4; the bounds are about 3x those."""
    rng = np.random.default_rng(6)
    w = {"blk.0.attn_q.weight": power_law_matrix(rng, 64, 256), "blk.0.ffn_up.weight": power_law_matrix(rng, 96, 512),
         "token_embd.weight": power_law_matrix(rng, 128, 256)}
    write_gguf(tmp_path / "q6.gguf", {k: (encode_q6_k(v), Q.Q6_K) for k, v in w.items()})
    sn.save_file({readable_name(k): v for k, v in w.items()}, str(tmp_path / "q6.safetensors"))
    got = htsr.analyze(tmp_path / "q6.gguf", seed=0).details
    ref = htsr.analyze(tmp_path / "q6.safetensors", seed=0).details
    assert list(got["name"]) == list(ref["name"]) and got["alpha"].notna().all()
    assert np.max(np.abs(got["alpha"] - ref["alpha"]) / ref["alpha"]) <= 2.5e-2
    assert np.max(np.abs(got["log_norm"] - ref["log_norm"])) <= 1.5e-3
    for t in open_source(tmp_path / "q6.gguf").tensors:  # within half a step (group max / 31) of each value
        v = w[next(k for k in w if readable_name(k) == t.key)]
        half_step = np.repeat(np.abs(v.reshape(-1, 16)).max(axis=1) / 62 * 1.02, 16).reshape(v.shape)
        assert np.all(np.abs(t.load() - v) <= half_step + 1e-6)


def test_llama_names_are_mapped():
    assert readable_name("blk.11.attn_q.weight") == "model.layers.11.self_attn.q_proj.weight"
    assert readable_name("blk.0.ffn_down.weight") == "model.layers.0.mlp.down_proj.weight"
    assert readable_name("token_embd.weight") == "model.embed_tokens.weight"
    assert readable_name("output.weight") == "lm_head.weight"
    assert readable_name("blk.0.something_new.weight") == "blk.0.something_new.weight"


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0])
def test_quantized_rows_equal_the_safetensors_rows_within_the_stated_error(tmp_path, qtype):
    rng = np.random.default_rng(int(qtype))
    w = {"token_embd.weight": power_law_matrix(rng, 96, 64), "blk.0.attn_q.weight": power_law_matrix(rng, 64, 64),
         "blk.0.ffn_down.weight": power_law_matrix(rng, 64, 128), "output.weight": power_law_matrix(rng, 96, 64)}
    write_gguf(tmp_path / "m.gguf", {k: (v, qtype) for k, v in w.items()})
    sn.save_file({readable_name(k): v for k, v in w.items()}, str(tmp_path / "m.safetensors"))
    got = htsr.analyze(tmp_path / "m.gguf", seed=0).details
    ref = htsr.analyze(tmp_path / "m.safetensors", seed=0).details
    assert list(got["name"]) == list(ref["name"]) == ["lm_head", "model.embed_tokens", "model.layers.0.mlp.down_proj",
                                                       "model.layers.0.self_attn.q_proj"]
    assert list(got["layer_type"]) == ["dense", "embedding", "dense", "dense"]
    pd.testing.assert_frame_equal(got[["layer_id", "N", "M"]], ref[["layer_id", "N", "M"]])
    assert got["alpha"].notna().all()
    assert np.max(np.abs(got["alpha"] - ref["alpha"]) / ref["alpha"]) <= TOL[qtype][0]
    assert np.max(np.abs(got["log_norm"] - ref["log_norm"])) <= TOL[qtype][1]
    # the dequantized weights themselves: exact for F32, else within one rounding step of the type
    # (F16 2^-11, BF16 2^-8 relative; Q8_0 and Q4_0: absmax/127 and absmax/8 of each 32-value block)
    tensors = {t.key: t.load() for t in open_source(tmp_path / "m.gguf").tensors}
    for k, v in w.items():
        err = np.abs(tensors[readable_name(k)] - v).max() / np.abs(v).max()
        assert err <= {Q.F32: 0, Q.F16: 1e-3, Q.BF16: 4e-3, Q.Q8_0: 1e-2, Q.Q4_0: 0.126}[qtype]


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q5_K, Q.Q6_K])
def test_k_quants_are_dequantized_with_the_right_layout(tmp_path, qtype):
    with pytest.raises(NotImplementedError):  # if this starts passing, quantize real weights instead
        quants.quantize(np.zeros((2, 256), np.float32), qtype)
    rng = np.random.default_rng(int(qtype))
    raw = {"blk.0.attn_v.weight": k_blocks(rng, 48, 512, qtype), "blk.1.attn_v.weight": k_blocks(rng, 64, 256, qtype)}
    write_gguf(tmp_path / "k.gguf", {k: (v, qtype) for k, v in raw.items()})
    source = open_source(tmp_path / "k.gguf")
    assert [(t.name, t.shape, t.dtype) for t in source.tensors] == [
        ("model.layers.0.self_attn.v_proj", (48, 512), qtype.name.lower()),
        ("model.layers.1.self_attn.v_proj", (64, 256), qtype.name.lower())]
    dense = {readable_name(k): quants.dequantize(v, qtype) for k, v in raw.items()}
    for t in source.tensors:
        np.testing.assert_array_equal(t.load(), dense[t.key])
    sn.save_file(dense, str(tmp_path / "k.safetensors"))
    from_gguf = htsr.analyze(tmp_path / "k.gguf", seed=0).details
    from_safetensors = htsr.analyze(tmp_path / "k.safetensors", seed=0).details
    assert from_gguf.pop("storage").tolist() == [qtype.name.lower()] * 2  # what each file stores
    assert from_safetensors.pop("storage").tolist() == ["f32"] * 2
    pd.testing.assert_frame_equal(from_gguf, from_safetensors)


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(SourceError, match="bad.gguf"):
        htsr.analyze(bad)
