"""Quantized weights in key-value files (htsr.sources.quant): each scheme against an oracle or a round trip.

Oracles: bitsandbytes' CPU backend (4-bit nf4/fp4, nested, int8), compressed-tensors'
own ``pack_to_int32``, torch's float8 casts; GPTQ, AWQ, MLX and MXFP4 (whose
libraries need CUDA or Apple silicon) are packed by ``tests/quant_packers.py``, an
independent loop-based packer written from the documented layouts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from quant_packers import awq_pack, gptq_pack, mxfp4_pack, pack_bits_le, quantize_groups

import htsr
from htsr.errors import HtsrError, OptionError
from htsr.sources import open_source
from htsr.sources.keyvalue import weight_tensors
from htsr.sources.quant import dequant as dq
from htsr.sources.torch_source import mapping_entries

RNG = np.random.default_rng(17)


def _save(tmp_path, tensors: dict, config: dict | None = None, name: str = "model.safetensors"):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    out = {k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))).contiguous()
           for k, v in tensors.items()}
    save_file(out, str(tmp_path / name))
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / name


def _one(obj, **kw):
    tensors = [t for t in open_source(obj).tensors if not t.note]
    assert len(tensors) == 1, [(t.key, t.note) for t in open_source(obj).tensors]
    return tensors[0]


def test_unpack_stream_matches_the_loop_packer_for_every_width():
    for bits in range(1, 9):
        codes = RNG.integers(0, 1 << bits, size=(3, 70))
        words = pack_bits_le(codes, bits)
        assert words.shape == (3, -(-70 * bits // 32))
        assert np.array_equal(dq.unpack_stream(words, bits, 70), codes)


# ---------------------------------------------------------------- bitsandbytes (oracle: its CPU backend)
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("nested", [False, True])
def test_bnb_4bit_equals_bitsandbytes_dequantize(quant_type, nested, tmp_path):
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    w = torch.from_numpy(RNG.standard_normal((96, 80)).astype(np.float32))
    q, state = F.quantize_4bit(w, quant_type=quant_type, blocksize=64, compress_statistics=nested)
    expected = F.dequantize_4bit(q, state).numpy()
    sd = {"fc.weight": q, "fc.bias": torch.zeros(96)}
    sd.update({f"fc.weight.{k}": v for k, v in state.as_dict(packed=True).items()})
    t = _one(_save(tmp_path, sd))
    assert (t.name, t.shape, t.storage) == ("fc", (96, 80), f"bnb-{quant_type}")
    assert set(t.aux) >= {"fc.weight.absmax", "fc.weight.quant_map", f"fc.weight.quant_state.bitsandbytes__{quant_type}"}
    assert np.array_equal(t.load(), expected)
    assert t.bias is not None


def test_bnb_int8_equals_bitsandbytes_dequantize():
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    w = torch.from_numpy(RNG.standard_normal((64, 48)).astype(np.float32))
    cb, scb, _ = F.int8_vectorwise_quant(w.half())
    expected = F.int8_vectorwise_dequant(cb, scb).float().numpy()
    t = _one({"fc.weight": cb, "fc.SCB": scb, "fc.weight_format": torch.tensor(0, dtype=torch.uint8)})
    assert (t.storage, t.aux) == ("bnb-int8", ("fc.SCB", "fc.weight_format"))
    np.testing.assert_allclose(t.load(), expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- compressed-tensors (oracle: its packer)
@pytest.mark.parametrize("bits, group, asym", [(4, 32, False), (4, 0, True), (8, 16, True), (2, 32, False)])
def test_compressed_tensors_pack_quantized_equals_its_unpacker(bits, group, asym, tmp_path):
    torch = pytest.importorskip("torch")
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    rows, cols = 40, 96
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = torch.from_numpy(RNG.integers(lo, hi + 1, size=(rows, cols)).astype(np.int8))
    n_groups = 1 if group == 0 else cols // group
    scale = torch.from_numpy(RNG.uniform(0.01, 0.1, (rows, n_groups)).astype(np.float32)).to(torch.bfloat16)
    sd = {"m.weight_packed": helpers.pack_to_int32(q, bits), "m.weight_scale": scale,
          "m.weight_shape": torch.tensor([rows, cols])}
    zero = torch.zeros(rows, n_groups, dtype=torch.int8)
    if asym:
        zero = torch.from_numpy(RNG.integers(lo, hi + 1, size=(rows, n_groups)).astype(np.int8))
        sd["m.weight_zero_point"] = helpers.pack_to_int32(zero, bits, packed_dim=0)
    unpacked = helpers.unpack_from_int32(sd["m.weight_packed"], bits, torch.Size([rows, cols])).float()
    if asym:
        zero = helpers.unpack_from_int32(sd["m.weight_zero_point"], bits, torch.Size([rows, n_groups]), packed_dim=0)
    per_col = torch.arange(cols) // (cols // n_groups)
    expected = ((unpacked - zero.float()[:, per_col]) * scale.float()[:, per_col]).numpy()
    config = {"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                                      "config_groups": {"group_0": {"weights": {"num_bits": bits}}}}}
    t = _one(_save(tmp_path, sd, config))
    assert t.storage == f"ct-int{bits}/" + ("channel" if group == 0 else f"g{group}")
    assert t.shape == (rows, cols)
    np.testing.assert_allclose(t.load(), expected, rtol=1e-6)


# ---------------------------------------------------------------- FP8 (oracle: torch's float8 cast)
@pytest.mark.parametrize("layout", ["tensor", "channel", "block"])
def test_fp8_scales(layout, tmp_path):
    torch = pytest.importorskip("torch")
    rows, cols = 200, 300  # not multiples of 128: the last blocks are partial
    w = torch.from_numpy(RNG.standard_normal((rows, cols)).astype(np.float32))
    if layout == "tensor":
        scale = torch.tensor(0.02)
        full = scale.expand(rows, cols)
        key = "weight_scale"
    elif layout == "channel":
        scale = torch.from_numpy(RNG.uniform(0.01, 0.05, (rows, 1)).astype(np.float32))
        full = scale.expand(rows, cols)
        key = "weight_scale"
    else:
        scale = torch.from_numpy(RNG.uniform(0.01, 0.05, (2, 3)).astype(np.float32))
        full = scale.repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]
        key = "weight_scale_inv"
    codes = (w / full).to(torch.float8_e4m3fn)
    expected = (codes.float() * full).numpy()
    t = _one(_save(tmp_path, {"a.weight": codes, f"a.{key}": scale, "a.input_scale": torch.tensor(1.0)}))
    assert t.storage == {"tensor": "fp8_e4m3/tensor", "channel": "fp8_e4m3/channel", "block": "fp8_e4m3/block128"}[layout]
    assert t.aux[0] == f"a.{key}"
    np.testing.assert_array_equal(t.load(), expected)


def test_fp8_block_size_from_config(tmp_path):
    torch = pytest.importorskip("torch")
    codes = torch.from_numpy(RNG.standard_normal((64, 64)).astype(np.float32)).to(torch.float8_e4m3fn)
    scale = torch.from_numpy(RNG.uniform(1, 2, (2, 4)).astype(np.float32))
    path = _save(tmp_path, {"a.weight": codes, "a.weight_scale_inv": scale},
                 {"quantization_config": {"quant_method": "fp8", "weight_block_size": [32, 16]}})
    t = _one(path)
    full = scale.repeat_interleave(32, 0).repeat_interleave(16, 1)
    assert t.storage == "fp8_e4m3/block32x16"
    np.testing.assert_array_equal(t.load(), (codes.float() * full).numpy())


# ---------------------------------------------------------------- GPTQ and AWQ (round trip through our packer)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("v2", [False, True])
def test_gptq_round_trip(bits, act_order, v2, tmp_path):
    out, n_in, group = 48, 128, 32
    w = RNG.standard_normal((out, n_in)).astype(np.float32)
    g_idx = np.arange(n_in) // group
    if act_order:
        g_idx = RNG.permutation(g_idx)  # act-order: any input row may belong to any group
    codes = np.empty((out, n_in), dtype=np.int64)
    scales = np.empty((n_in // group, out), dtype=np.float16)
    zeros = np.empty((n_in // group, out), dtype=np.int64)
    for g in range(n_in // group):
        cols = np.flatnonzero(g_idx == g)
        c, s, z = quantize_groups(w[:, cols], bits, group, RNG)
        codes[:, cols], scales[g], zeros[g] = c, s[0], z[0]
    zeros[0, 0] = 1  # a zero of 1 stores 0 in v1: the +1 matters
    packed = gptq_pack(codes, scales, zeros, bits, v2=v2)
    sd = {f"l.{k}": v for k, v in packed.items()} | {"l.g_idx": g_idx.astype(np.int32)}
    config = {"quantization_config": {"quant_method": "gptq", "bits": bits, "group_size": group,
                                      "checkpoint_format": "gptq_v2" if v2 else "gptq"}}
    t = _one(_save(tmp_path, sd, config))
    expected = (codes - zeros[g_idx].T) * scales[g_idx].T.astype(np.float32)
    assert (t.name, t.shape, t.storage) == ("l", (out, n_in), f"gptq-int{bits}/g{group}")
    assert sorted(t.aux) == ["l.g_idx", "l.qzeros", "l.scales"]
    np.testing.assert_allclose(t.load(), expected, rtol=1e-6)
    if not v2:  # without a config: bits told from the shapes, v1 (the default format)
        (tmp_path / "config.json").unlink()
        t2 = _one(tmp_path / "model.safetensors")
        assert t2.storage == f"gptq-int{bits}/g{group}"
        np.testing.assert_allclose(t2.load(), expected, rtol=1e-6)


def test_awq_round_trip(tmp_path):
    out, n_in, group = 64, 96, 32
    w = RNG.standard_normal((out, n_in)).astype(np.float32)
    codes, scales, zeros = quantize_groups(w, 4, group, RNG)
    sd = {"m.qweight": awq_pack(codes.T), "m.qzeros": awq_pack(zeros), "m.scales": scales, "m.bias": np.zeros(out)}
    t = _one(_save(tmp_path, sd))
    per_col = np.arange(n_in) // group
    expected = (codes - zeros[per_col].T) * scales[per_col].T.astype(np.float32)
    assert (t.shape, t.storage) == ((out, n_in), "awq-int4/g32")
    np.testing.assert_allclose(t.load(), expected, rtol=1e-6)
    np.testing.assert_allclose(t.load(), w, atol=float(scales.max()))  # and close to the original


# ---------------------------------------------------------------- MLX and MXFP4
@pytest.mark.parametrize("bits, group", [(4, 64), (3, 32), (8, 32)])
def test_mlx_affine_round_trip_needs_config(bits, group, tmp_path):
    out, n_in = 24, 128
    codes = RNG.integers(0, 1 << bits, (out, n_in))
    scales = RNG.uniform(0.01, 0.1, (out, n_in // group)).astype(np.float16)
    biases = RNG.uniform(-1, 1, (out, n_in // group)).astype(np.float16)
    sd = {"e.weight": pack_bits_le(codes, bits).view(np.uint32), "e.scales": scales, "e.biases": biases}
    path = _save(tmp_path, sd)
    skipped = open_source(path).tensors[0]
    assert skipped.note.startswith("quantized weights, scheme not recognized")
    (tmp_path / "config.json").write_text(json.dumps({"quantization": {"group_size": group, "bits": bits}}))
    t = _one(path)
    per_col = np.arange(n_in) // group
    expected = codes * scales[:, per_col].astype(np.float32) + biases[:, per_col].astype(np.float32)
    assert (t.shape, t.storage) == ((out, n_in), f"mlx-q{bits}/g{group}")
    np.testing.assert_allclose(t.load(), expected, rtol=1e-6)


def test_mxfp4_experts_one_row_each(tmp_path):
    mats = RNG.standard_normal((3, 40, 64)).astype(np.float32)
    packed = [mxfp4_pack(m) for m in mats]
    sd = {"mlp.experts.down_proj_blocks": np.stack([p[0] for p in packed]),
          "mlp.experts.down_proj_scales": np.stack([p[1] for p in packed]),
          "mlp.experts.down_proj_bias": np.zeros((3, 40), np.float32)}
    tensors = [t for t in open_source(_save(tmp_path, sd)).tensors if t.storage]
    assert [t.name for t in tensors] == [f"mlp.experts.down_proj.{k}" for k in range(3)]
    for t, p in zip(tensors, packed):
        assert (t.shape, t.storage, t.aux) == ((40, 64), "mxfp4", ("mlp.experts.down_proj_scales",))
        np.testing.assert_array_equal(t.load(), p[2])


# ---------------------------------------------------------------- the table: storage column, integers, bad input
def test_storage_column_and_compat_columns_unchanged(tmp_path):
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    w = torch.from_numpy(RNG.standard_normal((64, 48)).astype(np.float32))
    cb, scb, _ = F.int8_vectorwise_quant(w.half())
    sd = {"a.weight": w.to(torch.bfloat16), "b.weight": cb, "b.SCB": scb, "c.weight": w}
    details = htsr.analyze(_save(tmp_path, sd)).details
    assert details["storage"].tolist() == ["bf16", "bnb-int8", "f32"]
    ww = htsr.WeightWatcher().analyze(model=str(tmp_path / "model.safetensors"))
    assert "storage" not in ww.columns and len(ww) == 3


def test_integer_tensors_are_not_values_unless_asked():
    sd = {"a.weight": RNG.integers(-100, 100, (40, 30)).astype(np.int8),
          "b.weight": RNG.standard_normal((40, 30))}
    report = htsr.analyze(sd)
    assert report.details["name"].tolist() == ["b"]
    reason = report.skipped.set_index("name").loc["a", "reason"]
    assert "integer tensor (int8)" in reason and "integer_values=True" in reason
    both = htsr.analyze(sd, integer_values=True).details
    assert both["name"].tolist() == ["a", "b"] and both["storage"].tolist() == ["int8", "f64"]
    with pytest.raises(OptionError, match="integer_values"):
        htsr.analyze(sd, integer_values="yes")


def _gptq_file(tmp_path, config_bits=4, **damage):
    codes, scales, zeros = quantize_groups(RNG.standard_normal((32, 64)).astype(np.float32), 4, 32, RNG)
    sd = {f"bad.{k}": v for k, v in gptq_pack(codes, scales, zeros, 4).items()}
    sd.update({k: v for k, v in damage.items()})
    sd["good.weight"] = RNG.standard_normal((50, 40)).astype(np.float32)
    return _save(tmp_path, sd, {"quantization_config": {"quant_method": "gptq", "bits": config_bits}})


@pytest.mark.parametrize("damage, message", [
    ({"bad.scales": np.ones((3, 32), np.float16)}, "'bad.qzeros' has shape (2, 4), expected (3, 4)"),
    ({"bad.scales": np.ones((2, 30), np.float16)}, "'bad.scales' has shape (2, 30), expected (2, 32)"),
    ({"bad.qzeros": np.zeros((2, 5), np.int32)}, "'bad.qzeros' has shape (2, 5), expected (2, 4)"),
    ({"bad.g_idx": np.zeros(60, np.int32)}, "'bad.g_idx' has shape (60,), expected (64,)"),
])
def test_bad_gptq_metadata_skips_the_layer_only(damage, message, tmp_path):
    report = htsr.analyze(_gptq_file(tmp_path, **damage))
    assert report.details["name"].tolist() == ["good"]
    reason = report.skipped.set_index("name").loc["bad", "reason"]
    assert message in reason and "\n" not in reason


def test_bits_outside_the_set_and_absmax_of_wrong_size(tmp_path):
    report = htsr.analyze(_gptq_file(tmp_path, config_bits=5))
    assert "GPTQ bits=5 for 'bad.qweight', expected one of (2, 3, 4, 8)" in report.skipped.iloc[0]["reason"]
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    q, state = F.quantize_4bit(torch.randn(32, 64, generator=torch.Generator().manual_seed(0)), blocksize=64)
    sd = {"x.weight": q, "y.weight": torch.randn(20, 30, generator=torch.Generator().manual_seed(1))}
    sd.update({f"x.weight.{k}": v for k, v in state.as_dict(packed=True).items()})
    sd["x.weight.absmax"] = torch.ones(5)
    report = htsr.analyze(sd)
    assert report.details["name"].tolist() == ["y"]
    assert "'x.weight.absmax' has shape (5,), expected (32,)" in report.skipped.iloc[0]["reason"]


def test_bad_values_fail_the_row_with_one_line():
    codes, scales, zeros = quantize_groups(RNG.standard_normal((32, 64)).astype(np.float32), 4, 32, RNG)
    sd = {f"l.{k}": v for k, v in gptq_pack(codes, scales, zeros, 4).items()}
    sd["l.g_idx"] = np.full(64, 7, np.int32)  # group 7 of 2
    row = htsr.analyze(sd).details.iloc[0]
    assert row["status"] == "invalid" and "g_idx values must lie in [0, 2)" in row["reason"]


def test_fuzzed_quantized_groups_never_crash(tmp_path):
    """Random shapes, dtypes and bytes for every part of every scheme: an HtsrError, a row, or a skip."""
    rng = np.random.default_rng(0)
    parts = {"qweight": "int32", "qzeros": "int32", "scales": "float16", "g_idx": "int32", "weight": "uint8",
             "weight_scale": "float32", "weight_scale_inv": "float32", "SCB": "float32", "weight_packed": "int32",
             "weight_shape": "int64", "weight_zero_point": "int32", "biases": "float16",
             "weight.absmax": "float32", "weight.quant_map": "float32",
             "weight.quant_state.bitsandbytes__nf4": "uint8"}
    configs = [{}, {"quant_method": "gptq", "bits": 3}, {"quant_method": "awq"}, {"bits": 4, "group_size": 8},
               {"weight_block_size": [4, 4]}, {"config_groups": {"g": {"weights": {"num_bits": 8}}}}]
    for trial in range(150):
        chosen = rng.choice(list(parts), size=rng.integers(2, 6), replace=False)
        sd = {}
        for part in chosen:
            shape = tuple(int(s) for s in rng.integers(1, 9, size=rng.integers(1, 3)))
            data = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(parts[part]).itemsize, dtype=np.uint8)
            sd[f"m.{part}"] = data.view(parts[part]).reshape(shape)
        if "weight.quant_state.bitsandbytes__nf4" in chosen and trial % 2:
            state = json.dumps({"shape": [8, 8], "blocksize": int(rng.integers(1, 70)), "quant_type": "nf4"})
            sd["m.weight.quant_state.bitsandbytes__nf4"] = np.frombuffer(state.encode(), np.uint8).copy()
        sd["other.weight"] = np.ones((3, 3))  # a well-formed neighbour is always still there
        tensors = list(weight_tensors(mapping_entries(sd, "<dict>"), configs[trial % len(configs)]))
        assert any(t.name == "other" and not t.note for t in tensors)
        for t in tensors:
            if t.note:
                assert "\n" not in t.note
                continue
            try:
                arr = t.load()
            except HtsrError as exc:
                assert "\n" not in str(exc)
                continue
            assert arr.shape == t.shape



def _gptq_tensors(bits: int = 4):
    codes, scales, zeros = quantize_groups(RNG.standard_normal((32, 64)).astype(np.float32), bits, 32, RNG)
    expected = (codes - np.repeat(zeros, 32, 0).T) * np.repeat(scales, 32, 0).T.astype(np.float32)
    return gptq_pack(codes, scales, zeros, bits), expected


def test_gptq_in_a_torch_file_an_npz_and_a_sharded_folder(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    packed, expected = _gptq_tensors()
    sd = {f"l.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in packed.items()}
    sd["l.bias"] = torch.zeros(32)
    torch.save(sd, tmp_path / "sd.pt")
    np.savez(tmp_path / "sd.npz", **{k: v.numpy() for k, v in sd.items()})
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({"l.qweight": sd["l.qweight"], "l.bias": sd["l.bias"]}, str(folder / "a.safetensors"))
    save_file({"l.qzeros": sd["l.qzeros"], "l.scales": sd["l.scales"]}, str(folder / "b.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "l.bias": "a.safetensors", "l.qweight": "a.safetensors", "l.qzeros": "b.safetensors",
        "l.scales": "b.safetensors"}}))
    (folder / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq", "bits": 4}}))
    for path in (tmp_path / "sd.pt", tmp_path / "sd.npz", folder):
        t = _one(path)
        assert (t.layer_id, t.name, t.storage, t.bias is not None) == (1, "l", "gptq-int4/g32", True), path
        np.testing.assert_allclose(t.load(), expected, rtol=1e-6)


def test_quantized_and_plain_layers_are_numbered_in_key_order(tmp_path):
    packed, _ = _gptq_tensors()
    sd = {"a.weight": RNG.standard_normal((20, 30)).astype(np.float32)}
    sd |= {f"b.{k}": v for k, v in packed.items()}
    sd["c.weight"] = RNG.standard_normal((20, 30)).astype(np.float32)
    tensors = open_source(sd).tensors
    assert [(t.layer_id, t.name, t.storage) for t in tensors] == [(1, "a", ""), (2, "b", "gptq-int4/g32"), (3, "c", "")]


def test_compressed_tensors_int8_and_fp8_channel_without_packing():
    torch = pytest.importorskip("torch")
    q = RNG.integers(-128, 128, (24, 40)).astype(np.int8)
    s = RNG.uniform(0.01, 0.1, (24, 1)).astype(np.float32)
    z = RNG.integers(-5, 5, (24, 1)).astype(np.int8)
    t = _one({"x.weight": q, "x.weight_scale": s, "x.weight_zero_point": z})
    assert t.storage == "int8/channel"
    np.testing.assert_allclose(t.load(), (q.astype(np.float32) - z) * s, rtol=1e-6)
    codes = torch.from_numpy(RNG.standard_normal((24, 40)).astype(np.float32)).to(torch.float8_e5m2)
    t = _one({"y.weight": codes, "y.weight_scale": torch.from_numpy(s)})
    assert t.storage == "fp8_e5m2/channel"
    np.testing.assert_array_equal(t.load(), codes.float().numpy() * s)


def test_unknown_quantized_keys_are_skipped_with_a_reason():
    sd = {"l.qweight": np.zeros((8, 32), np.int32), "l.scales": np.ones((1, 32), np.float16),
          "m.weight_packed": np.zeros((4, 4), np.int32), "m.weight_scale": np.ones((4, 1), np.float32)}
    tensors = open_source(sd).tensors
    notes = {t.name: t.note for t in tensors}
    assert notes["l"] == "quantized weights, scheme not recognized: 'l.qweight' without qzeros"
    assert notes["m"].startswith("quantized weights, scheme not recognized: 'm.weight_packed' without")
    assert {a for t in tensors for a in t.aux} == {"l.scales", "m.weight_scale"}


def test_a_float_weight_with_a_scale_stays_a_plain_row_and_uint8_with_a_scale_is_not_guessed():
    w = RNG.standard_normal((20, 30)).astype(np.float32)
    tensors = open_source({"a.weight": w, "a.weight_scale": np.ones((20, 1), np.float32),
                           "b.weight": RNG.integers(0, 255, (20, 30)).astype(np.uint8),
                           "b.weight_scale": np.ones((20, 1), np.float32)}).tensors
    a, b = (t for t in tensors if t.name in ("a", "b"))
    assert (a.storage, a.note, a.aux) == ("", "", ())
    np.testing.assert_array_equal(a.load(), w)
    assert b.note == "quantized weights, scheme not recognized: 'b.weight' of dtype uint8 with weight_scale"
    assert b.aux == ("b.weight_scale",)
