"""Fuzz the readers added for issue 11 (pickled models, TorchScript, ONNX, GGUF, Keras, Flax msgpack) and the
quantized layers of issue 17.

Same rules as ``test_fuzz.py`` (whose mutation and reading helpers are reused): a mutated file gives
rows or an :class:`htsr.HtsrError`, never another exception, a hang or a huge allocation. Zip formats are
mutated inside their members and re-zipped, so the edits reach the parsers instead of the zip CRC check.
"""

from __future__ import annotations

import io
import time
import warnings
import zipfile

import numpy as np
import pytest
from test_fuzz import mutate, run_cases

SECONDS = 60  # a generous ceiling for each batch: a parser that loops on a lying count fails here
PEAK_GROWTH = 1 << 30  # bytes: a reader that allocates what a lying header claims raises the process's peak


def rezip(data: bytes, rng: np.random.Generator, member_suffix: str, hot: int | None = None) -> bytes:
    """Mutate one member of a zip (the one ending in ``member_suffix``) and write the zip again."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith(member_suffix):
                body = mutate(body, rng, hot=hot)
            dst.writestr(info.filename, body)
    return out.getvalue()


def timed(fn, *args):
    """Run one batch; it must end within SECONDS and raise the peak resident memory by under PEAK_GROWTH."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    start = time.perf_counter()
    result = fn(*args)
    assert time.perf_counter() - start < SECONDS
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak < PEAK_GROWTH
    return result


def test_whole_model_pickles_and_torchscript(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 10), torch.nn.Conv2d(3, 4, 3), torch.nn.Embedding(20, 6))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32)))
    whole, script = tmp_path / "whole.pt", tmp_path / "script.pt"
    torch.save(model, whole)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), script)
    pkl = timed(run_cases, whole.read_bytes(), ".pt", 400, tmp_path, 70_000, lambda b, r: rezip(b, r, "data.pkl"))
    raw = timed(run_cases, whole.read_bytes(), ".pth", 150, tmp_path, 71_000, mutate)
    ts = timed(run_cases, script.read_bytes(), ".pt", 200, tmp_path, 72_000, lambda b, r: rezip(b, r, "data.pkl"))
    legacy_path = tmp_path / "legacy.bin"
    torch.save(model, legacy_path, _use_new_zipfile_serialization=False)
    legacy = timed(run_cases, legacy_path.read_bytes(), ".bin", 300, tmp_path, 72_500, mutate)
    assert pkl["HtsrError"] > 100 and pkl["ok"] > 10 and ts["HtsrError"] > 50 and raw["HtsrError"] > 50
    assert legacy["HtsrError"] > 50


def test_onnx(tmp_path):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = rng.standard_normal((12, 10)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(w, name="k")),
             helper.make_node("MatMul", ["x", "k"], ["h"]),
             helper.make_node("Conv", ["img", "c.weight"], ["y"])]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), name="c.weight")]
    io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "y")]
    data = helper.make_model(helper.make_graph(nodes, "g", [io_[0]], [io_[1]], initializer=inits)).SerializeToString()
    out = timed(run_cases, data, ".onnx", 400, tmp_path, 73_000, mutate)
    assert out["HtsrError"] > 50 and out["ok"] > 50


def _quantized_onnx() -> bytes:
    """Every ONNX path of issue 17 in one graph: QDQ per tensor / per axis / blocked, DQ after Gather and
    Transpose, QLinearMatMul, MatMulInteger with its rescaling Mul, an LSTM and an ``If`` whose branches share
    a weight."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    i8 = lambda *s: rng.integers(-100, 100, s).astype(np.int8)  # noqa: E731
    f32 = lambda *s: (rng.random(s) * 0.1 + 0.01).astype(np.float32)  # noqa: E731
    init = numpy_helper.from_array
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)
    branch = lambda n: helper.make_graph(  # noqa: E731
        [helper.make_node("MatMul", ["x", "shared"], ["b"], name=f"/{n}/MatMul")], n, [], [out])
    nodes = [
        helper.make_node("DequantizeLinear", ["q1", "s1", "z1"], ["d1"], axis=1),
        helper.make_node("MatMul", ["x", "d1"], ["h1"]),
        helper.make_node("Transpose", ["q2"], ["q2t"], perm=[1, 0]),
        helper.make_node("DequantizeLinear", ["q2t", "s2"], ["d2"]),
        helper.make_node("MatMul", ["x", "d2"], ["h2"]),
        helper.make_node("DequantizeLinear", ["q3", "s3"], ["d3"], axis=0, block_size=4),
        helper.make_node("Gemm", ["x", "d3"], ["h3"], transB=1),
        helper.make_node("Gather", ["tq", "ids"], ["g"]),
        helper.make_node("DequantizeLinear", ["g", "ts", "tz"], ["e"], axis=-1),
        helper.make_node("QLinearMatMul", ["xa", "s2", "z1", "q4", "s2", "z4", "s2", "z4"], ["h4"]),
        helper.make_node("MatMulInteger", ["xa", "q5", "z4", "z4"], ["mi"]),
        helper.make_node("Cast", ["mi"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["s2", "s2"], ["ss"]),
        helper.make_node("Mul", ["mf", "ss"], ["h5"]),
        helper.make_node("LSTM", ["x", "lw", "lr"], ["l"], hidden_size=4, direction="bidirectional"),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else")),
    ]
    inits = [init(i8(12, 10), "q1"), init(f32(10), "s1"), init(np.zeros(10, np.int8), "z1"),
             init(i8(10, 12), "q2"), init(f32(), "s2"), init(i8(12, 10), "q3"), init(f32(3, 10), "s3"),
             init(i8(30, 8), "tq"), init(f32(8), "ts"), init(np.zeros(8, np.int8), "tz"),
             init(i8(10, 12), "q4"), init(np.zeros((), np.int8), "z4"), init(i8(10, 12), "q5"),
             init(rng.standard_normal((2, 16, 6)).astype(np.float32), "lw"),
             init(rng.standard_normal((2, 16, 4)).astype(np.float32), "lr"),
             init(rng.standard_normal((10, 12)).astype(np.float32), "shared")]
    io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph(nodes, "g", [io_[0]], [io_[1]], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 21)])
    return model.SerializeToString()


def _mutate_onnx_fields(data: bytes, rng: np.random.Generator) -> bytes:
    """Rewrite a few attributes (axis, block_size, perm, hidden_size …) and dims with hostile values."""
    import onnx

    model = onnx.load_from_string(data)
    hostile = [-(2**62), -3, -1, 0, 1, 2, 3, 7, 2**31, 2**62]
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.6:
            node = model.graph.node[int(rng.integers(len(model.graph.node)))]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.INT:
                    attr.i = int(rng.choice(hostile))
                elif attr.type == onnx.AttributeProto.INTS:
                    attr.ints[:] = [int(rng.choice(hostile)) for _ in range(int(rng.integers(0, 4)))]
                elif attr.type == onnx.AttributeProto.STRING:
                    attr.s = rng.choice([b"reverse", b"bidirectional", b"forward", b"\xff"])
            if rng.random() < 0.3 and node.input:
                node.input[int(rng.integers(len(node.input)))] = str(rng.choice(["q1", "s1", "z4", "lw", "", "x"]))
        else:
            tensor = model.graph.initializer[int(rng.integers(len(model.graph.initializer)))]
            tensor.dims[:] = [int(rng.choice([0, 1, 2, 3, 10, 12, 2**40])) for _ in range(int(rng.integers(0, 4)))]
    return model.SerializeToString()


def test_onnx_quantized_graphs(tmp_path):
    pytest.importorskip("onnx")
    data = _quantized_onnx()
    fields = timed(run_cases, data, ".onnx", 300, tmp_path, 74_000, _mutate_onnx_fields)
    raw = timed(run_cases, data, ".onnx", 200, tmp_path, 75_000, mutate)
    assert fields["ok"] > 100 and raw["HtsrError"] > 20


def test_gguf(tmp_path):
    gguf = pytest.importorskip("gguf")
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    rng = np.random.default_rng(2)
    path = tmp_path / "base.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((16, 32)).astype(np.float32))
    w.add_tensor("blk.0.attn_k.weight", quants.quantize(rng.standard_normal((16, 64)).astype(np.float32), Q.Q8_0),
                 raw_dtype=Q.Q8_0)
    w.add_tensor("token_embd.weight", rng.standard_normal((20, 32)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = timed(run_cases, path.read_bytes(), ".gguf", 400, tmp_path, 74_000, lambda b, r: mutate(b, r, hot=400))
    assert out["HtsrError"] > 100


def test_keras_archive_and_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    import json

    rng = np.random.default_rng(3)
    # a .keras archive in Keras 3's layout, written with h5py (no Keras needed for this test)
    h5 = io.BytesIO()
    with h5py.File(h5, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=rng.standard_normal((10, 12)).astype(np.float32))
        f.create_dataset("layers/dense/vars/1", data=np.zeros(12, np.float32))
        f.create_dataset("layers/conv2d/vars/0", data=rng.standard_normal((3, 3, 2, 4)).astype(np.float32))
    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "d"}}, {"class_name": "Conv2D", "config": {"name": "c"}}]}}
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", h5.getvalue())
    base = archive.getvalue()
    cfg = timed(run_cases, base, ".keras", 200, tmp_path, 75_000, lambda b, r: rezip(b, r, "config.json"))
    weights = timed(run_cases, base, ".keras", 200, tmp_path, 76_000, lambda b, r: rezip(b, r, ".h5", hot=2048))
    bare = timed(run_cases, h5.getvalue(), ".h5", 200, tmp_path, 77_000, lambda b, r: mutate(b, r, hot=2048))
    # measured: config edits 16 read / 184 refused (most edits break the JSON); weights 47 / 153; bare 50 / 150
    assert cfg["ok"] > 5 and cfg["HtsrError"] > 100 and weights["HtsrError"] > 50 and bare["HtsrError"] > 50


def test_flax_msgpack(tmp_path):
    msgpack = pytest.importorskip("msgpack")
    rng = np.random.default_rng(4)

    def default(obj):
        return msgpack.ExtType(1, msgpack.packb((obj.shape, obj.dtype.name, obj.tobytes()), use_bin_type=True))

    tree = {"params": {"Dense_0": {"kernel": rng.standard_normal((10, 12)).astype(np.float32)},
                       "Conv_0": {"kernel": rng.standard_normal((3, 3, 2, 4)).astype(np.float32)}}}
    data = msgpack.packb(tree, default=default, use_bin_type=True)
    out = timed(run_cases, data, ".msgpack", 400, tmp_path, 78_000, mutate)
    assert out["HtsrError"] > 100


def test_quantized_safetensors(tmp_path):
    """Mutated quantized layers (GPTQ, AWQ, bitsandbytes nf4 nested, FP8 blocks, MLX, MXFP4, compressed-tensors)."""
    import json

    torch = pytest.importorskip("torch")
    from quant_packers import awq_pack, gptq_pack, mxfp4_pack, pack_bits_le, quantize_groups
    from safetensors.torch import save_file
    from test_fuzz import mutate_safetensors_header

    rng = np.random.default_rng(5)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    codes, scales, zeros = quantize_groups(w, 4, 32, rng)
    sd = {f"g.{k}": v for k, v in gptq_pack(codes, scales, zeros, 4).items()}
    sd |= {"a.qweight": awq_pack(codes.T), "a.qzeros": awq_pack(zeros), "a.scales": scales}
    state = {"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [32, 64],
             "nested_blocksize": 4, "nested_offset": 0.1}
    sd |= {"b.weight": rng.integers(0, 256, (1024, 1)).astype(np.uint8),
           "b.weight.absmax": rng.integers(0, 256, 32).astype(np.uint8),
           "b.weight.quant_map": np.linspace(-1, 1, 16).astype(np.float32),
           "b.weight.nested_absmax": rng.uniform(1, 2, 8).astype(np.float32),
           "b.weight.nested_quant_map": np.linspace(-1, 1, 256).astype(np.float32),
           "b.weight.quant_state.bitsandbytes__nf4": np.frombuffer(json.dumps(state).encode(), np.uint8).copy()}
    sd |= {"f.weight": torch.from_numpy(w).to(torch.float8_e4m3fn), "f.weight_scale_inv": np.ones((1, 1), np.float32)}
    sd |= {"m.weight": pack_bits_le(codes, 4).view(np.uint32), "m.scales": scales.T.copy(), "m.biases": scales.T.copy()}
    blocks, exps, _ = mxfp4_pack(w)
    sd |= {"x_blocks": blocks, "x_scales": exps}
    sd |= {"c.weight_packed": pack_bits_le(codes, 4), "c.weight_scale": np.ones((32, 2), np.float32),
           "c.weight_shape": np.array([32, 64])}
    path = tmp_path / "model.safetensors"
    save_file({k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))).contiguous()
               for k, v in sd.items()}, str(path))
    (tmp_path / "config.json").write_text(json.dumps({"quantization": {"bits": 4, "group_size": 32}}))
    base = path.read_bytes()
    fuzz = tmp_path / "fuzz"
    fuzz.mkdir()
    (fuzz / "config.json").write_text((tmp_path / "config.json").read_text())
    header = timed(run_cases, base, ".safetensors", 300, fuzz, 80_000, mutate_safetensors_header)
    raw = timed(run_cases, base, ".safetensors", 200, fuzz, 81_000, mutate)
    # header edits are mostly refused by the reader; data edits reach the dequantizers (tests/test_quant.py
    # fuzzes consistent headers with wrong shapes, dtypes and metadata)
    assert header["HtsrError"] > 200 and raw["ok"] > 40 and raw["HtsrError"] > 40


def test_nested_weights_h5_with_rnn_cells_under_an_unknown_suffix(tmp_path):
    """A subclassed model's ``.weights.h5`` (nested groups, an LSTM cell), recognized by content as ``.dat``."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(5)
    h5 = io.BytesIO()
    with h5py.File(h5, "w") as f:
        f.create_dataset("block1/conv/vars/0", data=rng.standard_normal((3, 3, 2, 4)).astype(np.float32))
        f.create_dataset("block1/dense/vars/0", data=rng.standard_normal((4, 12)).astype(np.float32))
        f.create_dataset("lstm/cell/vars/0", data=rng.standard_normal((9, 20)).astype(np.float32))
        f.create_dataset("lstm/cell/vars/1", data=rng.standard_normal((5, 20)).astype(np.float32))
        f.create_dataset("lstm/cell/vars/2", data=np.zeros(20, np.float32))
        f["lstm/cell/vars"].attrs["name"] = "lstm_cell"
        f.create_dataset("gru/cell/vars/2", data=np.zeros((2, 21), np.float32))
    out = timed(run_cases, h5.getvalue(), ".dat", 200, tmp_path, 79_000, lambda b, r: mutate(b, r, hot=4096))
    assert out["HtsrError"] > 50 and out["ok"] > 5


def test_key_value_files_with_rnn_keys_sniffed_by_content(tmp_path):
    """State dicts holding LSTM, cell and attention keys, mutated and named ``.dat``: read by content or refused."""
    torch = pytest.importorskip("torch")
    sn = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(6)
    arrays = {"rnn.weight_ih_l0": rng.standard_normal((40, 6)), "rnn.weight_hh_l0": rng.standard_normal((40, 10)),
              "rnn.weight_hh_l0_reverse": rng.standard_normal((40, 10)), "cell.weight_ih": rng.standard_normal((30, 4)),
              "cell.weight_hh": rng.standard_normal((30, 10)), "attn.in_proj_weight": rng.standard_normal((24, 8)),
              "fc.weight": rng.standard_normal((12, 10)), "table": rng.standard_normal((5, 5))}
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    st = tmp_path / "base.safetensors"
    sn.save_file(arrays, str(st))
    pt = tmp_path / "base.pt"
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, pt)
    a = timed(run_cases, st.read_bytes(), ".dat", 200, tmp_path, 80_000, lambda b, r: mutate(b, r, hot=600))
    b = timed(run_cases, pt.read_bytes(), ".dat", 200, tmp_path, 81_000, lambda b, r: rezip(b, r, "data.pkl"))
    assert a["HtsrError"] > 50 and b["HtsrError"] > 50 and a["ok"] + b["ok"] > 5
