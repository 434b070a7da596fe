"""ONNX graphs (issue 17): subgraphs, pass-through chains, RNN ops, quantized weights, the census.

The quantized files are made by onnxruntime's own ``quantize_static`` / ``quantize_dynamic`` where
that is how users get them, and onnxruntime running ``DequantizeLinear`` is the oracle for every
dequantized matrix (bit-equal: same arithmetic). Without onnxruntime (the ``test`` extra) those
tests are skipped; the graph-structure tests need only ``onnx``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.errors import SourceError
from htsr.sources import open_source

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

FLOAT_COLS = ["N", "M", "alpha", "lambda_max", "log_norm", "stable_rank", "sv_max", "entropy"]


def _model(nodes, inits=(), inputs=("x",), outputs=("y",), opset=21):
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs, initializer=list(inits)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value), name=name)


def _rows(src):
    return {t.name: t for t in src.tensors if not t.note}


def _quantize(w, axis=None, dtype=np.int8):
    """Symmetric/affine codes of ``w`` with a per-tensor or per-``axis`` scale (test data, any scheme works)."""
    lo, hi = (np.iinfo(dtype).min, np.iinfo(dtype).max)
    red = tuple(i for i in range(w.ndim) if i != axis) if axis is not None else None
    amax = np.abs(w).max(axis=red)
    scale = (amax / hi).astype(np.float32)
    zp = np.zeros_like(scale, dtype=dtype) if dtype == np.int8 else np.full(scale.shape, 128, dtype=dtype)
    bshape = [1] * w.ndim
    if axis is not None:
        bshape[axis] = -1
    codes = np.clip(np.round(w / scale.reshape(bshape)) + zp.reshape(bshape).astype(np.int32), lo, hi).astype(dtype)
    return codes, scale, zp


def _ort():
    return pytest.importorskip("onnxruntime")


def _ort_dequantize(pairs, block_size=0):
    """onnxruntime's DequantizeLinear of each (codes, scale, zero point, axis): the oracle."""
    ort = _ort()
    nodes, inits, outs = [], [], []
    blocked = {"block_size": block_size} if block_size else {}
    for i, (codes, scale, zp, axis) in enumerate(pairs):
        inits += [_init(f"c{i}", codes), _init(f"s{i}", scale), _init(f"z{i}", zp)]
        nodes.append(helper.make_node("DequantizeLinear", [f"c{i}", f"s{i}", f"z{i}"], [f"o{i}"], axis=axis,
                                      **blocked))
        outs.append(helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, None))
    model = helper.make_model(helper.make_graph(nodes, "dq", [], outs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 21 if block_size else 13)])
    model.ir_version = 10 if block_size else 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {})


def _stats(obj):
    return htsr.analyze(obj, seed=0).details.set_index("name")


# ---------------------------------------------------------------- subgraphs and chains


def test_weights_used_only_inside_if_branches_are_one_row(tmp_path):
    """The export pattern that did not open: the weight lives in the outer graph, both branches use it."""
    rng = np.random.default_rng(0)
    w, v = rng.standard_normal((24, 30)).astype(np.float32), rng.standard_normal((30, 12)).astype(np.float32)
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)
    then = helper.make_graph([helper.make_node("MatMul", ["x", "fc.weight"], ["b"], name="/then/fc/MatMul")],
                             "then", [], [out])
    other = helper.make_graph([helper.make_node("MatMul", ["x", "fc.weight"], ["t"], name="/else/fc/MatMul"),
                               helper.make_node("MatMul", ["t", "inner"], ["b"], name="/else/inner/MatMul")],
                              "else", [], [out], initializer=[_init("inner", v)])
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
    model = _model(nodes, [_init("fc.weight", w)], inputs=("x", "cond"))
    path = tmp_path / "if.onnx"
    onnx.save(model, str(path))
    src = open_source(path)
    assert [(t.name, t.shape, t.note) for t in src.tensors] == [("fc", (30, 24), ""), ("inner", (12, 30), "")]
    np.testing.assert_array_equal(src.tensors[0].load(), w.T)
    got = _stats(path)
    ref = _stats({"fc.weight": w.T.copy(), "inner.weight": v.T.copy()})
    pd.testing.assert_frame_equal(got[FLOAT_COLS], ref[FLOAT_COLS])


def test_loop_and_scan_bodies_are_searched():
    rng = np.random.default_rng(1)
    w, s = rng.standard_normal((16, 16)).astype(np.float32), rng.standard_normal((8, 16)).astype(np.float32)
    f = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, None)  # noqa: E731
    b = lambda n: helper.make_tensor_value_info(n, TensorProto.BOOL, None)  # noqa: E731
    body = helper.make_graph([helper.make_node("MatMul", ["h_in", "loop_w"], ["h_out"], name="/cell/MatMul"),
                              helper.make_node("Identity", ["c_in"], ["c_out"])],
                             "body", [helper.make_tensor_value_info("i", TensorProto.INT64, None), b("c_in"), f("h_in")],
                             [b("c_out"), f("h_out")])
    scan_body = helper.make_graph([helper.make_node("Gemm", ["xs", "scan_w"], ["ys"], transB=1, name="/scan/Gemm")],
                                  "sbody", [f("xs")], [f("ys")], initializer=[_init("scan_w", s)])
    nodes = [helper.make_node("Loop", ["n", "cond", "x"], ["y"], body=body),
             helper.make_node("Scan", ["x"], ["z"], body=scan_body, num_scan_inputs=1)]
    model = _model(nodes, [_init("loop_w", w)], inputs=("x", "n", "cond"), outputs=("y", "z"))
    src = open_source(model)
    assert [(t.name, t.shape) for t in src.tensors] == [("loop_w", (16, 16)), ("scan_w", (8, 16))]
    np.testing.assert_array_equal(src.tensors[1].load(), s)


def test_transpose_reshape_cast_identity_chains():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 20)).astype(np.float16)
    nodes = [helper.make_node("Reshape", ["w_flat", "shape"], ["w2"]),  # (120,) → (20, 6): (in, out)
             helper.make_node("Cast", ["w2"], ["w3"], to=TensorProto.FLOAT),
             helper.make_node("Identity", ["w3"], ["w4"]),
             helper.make_node("Transpose", ["w4"], ["w5"], perm=[1, 0]),  # (6, 20) = (out, in)
             helper.make_node("Gemm", ["x", "w5"], ["y"], transB=1, name="/proj/Gemm")]
    inits = [_init("w_flat", w.T.reshape(-1)), _init("shape", np.array([20, -1], np.int64))]
    (t,) = open_source(_model(nodes, inits)).tensors
    assert (t.name, t.shape, t.storage) == ("w_flat", (6, 20), "")
    np.testing.assert_array_equal(t.load(), w.astype(np.float32))


# ---------------------------------------------------------------- quantized weights


def test_qdq_per_tensor_and_per_axis_match_onnxruntime(tmp_path):
    """DequantizeLinear per tensor (int8) and per axis (uint8), also after Transpose and Reshape."""
    rng = np.random.default_rng(3)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((40, 24), (24, 16), (8, 3, 3, 3)))
    qa, sa, za = _quantize(a)  # per tensor, stored (out, in) and transposed before the DQ
    qb, sb, zb = _quantize(b, axis=1, dtype=np.uint8)  # per output column
    qc, sc, zc = _quantize(c, axis=0)  # per output channel, stored flat
    nodes = [helper.make_node("Transpose", ["a_q"], ["a_t"], perm=[1, 0]),
             helper.make_node("DequantizeLinear", ["a_t", "a_s", "a_z"], ["a_f"]),
             helper.make_node("MatMul", ["x", "a_f"], ["h"], name="/a/MatMul"),
             helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["b_f"], axis=1),
             helper.make_node("MatMul", ["h", "b_f"], ["y"], name="/b/MatMul"),
             helper.make_node("Reshape", ["c_q", "c_shape"], ["c_r"]),
             helper.make_node("DequantizeLinear", ["c_r", "c_s", "c_z"], ["c_f"], axis=0),
             helper.make_node("Conv", ["img", "c_f"], ["z"], name="/c/Conv")]
    inits = [_init("a_q", qa), _init("a_s", sa), _init("a_z", za), _init("b_q", qb), _init("b_s", sb),
             _init("b_z", zb), _init("c_q", qc.reshape(8, 27)), _init("c_shape", np.array([8, 3, 3, 3], np.int64)),
             _init("c_s", sc), _init("c_z", zc)]
    path = tmp_path / "qdq.onnx"
    onnx.save(_model(nodes, inits, inputs=("x", "img"), outputs=("y", "z")), str(path))
    rows = _rows(open_source(path))
    assert {n: (t.storage, t.aux, t.shape) for n, t in rows.items()} == {
        "a_q": ("int8-qdq", ("a_s", "a_z"), (40, 24)),
        "b_q": ("uint8-qdq/channel", ("b_s", "b_z"), (16, 24)),
        "c_q": ("int8-qdq/channel", ("c_s", "c_z"), (8, 3, 3, 3))}
    oa, ob, oc = _ort_dequantize([(qa, sa, za, 1), (qb, sb, zb, 1), (qc, sc, zc, 0)])
    np.testing.assert_array_equal(rows["a_q"].load(), oa)
    np.testing.assert_array_equal(rows["b_q"].load(), ob.T)
    np.testing.assert_array_equal(rows["c_q"].load(), oc)
    got = _stats(path)
    ref = _stats({"a.weight": oa, "b.weight": ob.T.copy(), "c.weight": oc})
    np.testing.assert_allclose(got[FLOAT_COLS].to_numpy(), ref[FLOAT_COLS].to_numpy(), rtol=1e-10)


def _float_model(path, rng):
    emb = rng.standard_normal((50, 24)).astype(np.float32)
    w = rng.standard_normal((24, 30)).astype(np.float32)
    cw = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], name="/embed/Gather"),
             helper.make_node("MatMul", ["e", "w"], ["y"], name="/fc/MatMul"),
             helper.make_node("Conv", ["img", "cw"], ["c"], name="/conv/Conv")]
    ins = [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5]),
           helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 8, 8])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "c")]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs, initializer=[
        _init("emb", emb), _init("w", w), _init("cw", cw)]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return {"embed": emb, "fc": w.T.copy(), "conv": cw}


@pytest.mark.parametrize("how", ["qdq", "qoperator", "dynamic", "dynamic-per-channel"])
def test_onnxruntime_quantized_files(tmp_path, how):
    """Files made by onnxruntime.quantization: every weight is dequantized, none is read as codes."""
    _ort()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static

    rng = np.random.default_rng(4)
    src_path, path = tmp_path / "f.onnx", tmp_path / f"{how}.onnx"
    floats = _float_model(src_path, rng)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"ids": rng.integers(0, 50, (2, 5)),
                             "img": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.it, None)

    import logging

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" advice
    if how.startswith("dynamic"):
        quantize_dynamic(str(src_path), str(path), per_channel=how.endswith("channel"),
                         op_types_to_quantize=["MatMul", "Gather", "Conv"])
    else:
        quantize_static(str(src_path), str(path), Reader(), per_channel=True,
                        quant_format=QuantFormat.QDQ if how == "qdq" else QuantFormat.QOperator)
    src = open_source(path)
    rows = {t.key.removesuffix("_quantized"): t for t in src.tensors if not t.note}
    assert set(rows) == {"emb", "w", "cw"}, [(t.name, t.note) for t in src.tensors]
    kind = {"qdq": "qdq", "qoperator": "qlinear"}.get(how, "integer")
    for key, t in rows.items():
        assert t.storage.split("/")[0].endswith(kind if key != "emb" or how == "qdq" else t.storage.split("-")[1])
        assert t.dtype == "float32" and not t.extra
    # the census: every initializer of two or more dimensions is a row, a skip or an auxiliary
    model = onnx.load(str(path))
    aux = {a for t in src.tensors for a in t.aux}
    for init in model.graph.initializer:
        if len(init.dims) >= 2:
            assert init.name in {t.key for t in src.tensors} | aux
    # onnxruntime's DequantizeLinear of the stored codes is what htsr analyzes
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    pairs = []
    for key, t in rows.items():
        scale, zp = inits[t.aux[0]], inits[t.aux[1]]
        axis = 0 if key == "cw" else 1
        pairs.append((inits[t.key], scale, zp, axis if scale.size > 1 else 1))
    for (key, t), oracle in zip(rows.items(), _ort_dequantize(pairs)):
        np.testing.assert_array_equal(t.load(), oracle.T if key == "w" else oracle)
        original = {"emb": floats["embed"], "w": floats["fc"], "cw": floats["conv"]}[key]
        np.testing.assert_allclose(t.load(), original, atol=0.05 * np.abs(original).max())
    # lambda_max of the dequantized matrices, not of the codes (the 4.6e8 of issue 17)
    got = _stats(path).sort_values(["N", "M"])
    ref = _stats({"a.embed.weight": rows["emb"].load(), "fc.weight": rows["w"].load(), "conv.weight": rows["cw"].load()})
    np.testing.assert_allclose(got[FLOAT_COLS].to_numpy(), ref.sort_values(["N", "M"])[FLOAT_COLS].to_numpy(), rtol=1e-10)
    assert got["lambda_max"].max() < 1e3


def test_dequantize_after_gather_per_axis_and_per_tensor():
    """int8 table → Gather → DequantizeLinear (scale per embedding column, axis -1, or per tensor)."""
    _ort()
    rng = np.random.default_rng(5)
    t1, t2 = rng.standard_normal((60, 16)).astype(np.float32), rng.standard_normal((30, 8)).astype(np.float32)
    q1, s1, z1 = _quantize(t1, axis=1)
    q2, s2, z2 = _quantize(t2, dtype=np.uint8)
    nodes = [helper.make_node("Gather", ["tok_q", "ids"], ["g1"], name="/tok/Gather"),
             helper.make_node("DequantizeLinear", ["g1", "tok_s", "tok_z"], ["e1"], axis=-1),
             helper.make_node("Gather", ["pos_q", "ids"], ["g2"], name="/pos/Gather"),
             helper.make_node("DequantizeLinear", ["g2", "pos_s", "pos_z"], ["y"])]
    inits = [_init("tok_q", q1), _init("tok_s", s1), _init("tok_z", z1), _init("pos_q", q2), _init("pos_s", s2),
             _init("pos_z", z2)]
    rows = _rows(open_source(_model(nodes, inits, inputs=("ids",))))
    assert {n: (t.storage, t.layer_type.value) for n, t in rows.items()} == {
        "tok_q": ("int8-qdq/channel", "embedding"), "pos_q": ("uint8-qdq", "embedding")}
    o1, o2 = _ort_dequantize([(q1, s1, z1, 1), (q2, s2, z2, 1)])
    np.testing.assert_array_equal(rows["tok_q"].load(), o1)
    np.testing.assert_array_equal(rows["pos_q"].load(), o2)


def _rnn_net(torch):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(6, 8, num_layers=2, bidirectional=True)
            self.gru = torch.nn.GRU(16, 5)
            self.fc = torch.nn.Linear(5, 3)

        def forward(self, x):
            return self.fc(self.gru(self.lstm(x)[0])[0])

    torch.manual_seed(0)
    return Net().eval()


def test_the_dynamo_exporter_gives_the_module_rows(tmp_path):
    """torch.onnx.export(dynamo=True) names nodes node_LSTM_7 and weights val_12: the module path comes from
    the node's ``namespace`` metadata, so the rows still equal the module's."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    net = _rnn_net(torch)
    path = tmp_path / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(4, 2, 6),), str(path), dynamo=True, verbose=False)
    got = [t for t in open_source(path).tensors if not t.note]
    expected = [t for t in open_source(net).tensors if not t.note]
    key = lambda t: (t.longname, t.shape)  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, expected))
    by_name = {t.longname: t for t in expected}
    for t in got:
        np.testing.assert_array_equal(t.load(), by_name[t.longname].load())


def test_dynamic_quantize_lstm_and_rnn_ops_give_the_state_dict_rows(tmp_path):
    """nn.LSTM / nn.GRU exported with torch.onnx.export: the same gate rows as the module; then int8."""
    torch = pytest.importorskip("torch")
    net = _rnn_net(torch)
    path = tmp_path / "rnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated; it needs no onnxscript
        torch.onnx.export(net, (torch.zeros(4, 2, 6),), str(path), dynamo=False)
    # a file's gate rows follow the state-dict rule (parameters in key order, gates in PyTorch's order), as the
    # state dict's own rows do (tests/test_registry.py); the module lists them in its own order
    module_rows = sorted((t for t in open_source(net).tensors if t.extra), key=lambda t: t.longname.rpartition(".")[0])
    onnx_rows = [t for t in open_source(path).tensors if t.extra]
    assert [(t.name, t.longname, t.shape) for t in onnx_rows] == [(t.name, t.longname, t.shape) for t in module_rows]
    assert onnx_rows[0].longname == "gru.weight_hh_l0.r" and onnx_rows[-1].longname == "lstm.weight_ih_l1_reverse.o"
    for a, b in zip(onnx_rows, module_rows):
        np.testing.assert_array_equal(a.load(), b.load())
    # the compat WeightWatcher leaves RNN rows out, as the reference does
    assert not [t for t in open_source(path, extra_rows=False).tensors if t.extra]

    _ort()
    import logging

    from onnxruntime.quantization import quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)
    qpath = tmp_path / "rnn_q.onnx"
    quantize_dynamic(str(path), str(qpath), op_types_to_quantize=["LSTM"])
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(str(qpath)).graph.node}
    q_rows = [t for t in open_source(qpath).tensors if t.extra]
    assert [t.longname for t in q_rows] == [t.longname for t in module_rows]
    assert {t.storage.split("/")[0] for t in q_rows if t.longname.startswith("lstm")} == {"int8-dynlstm"}
    for a, b in zip(q_rows, module_rows):
        ref = b.load()
        np.testing.assert_allclose(a.load(), ref, atol=0.02 * np.abs(ref).max() + 1e-6)
    # the oracle: onnxruntime's DequantizeLinear of each stored W / R, per direction (axis 0) or per direction
    # and column (a (dirs, 1, cols) scale in blocks of the input size)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(qpath)).graph.initializer}
    for t in q_rows:
        if not t.storage:
            continue
        codes, scale, zp = inits[t.key], inits[t.aux[0]], inits[t.aux[1]]
        if scale.ndim == 1:
            (full,) = _ort_dequantize([(codes, scale, zp, 0)])
        else:
            (full,) = _ort_dequantize([(codes, scale[:, None], zp[:, None], 1)], block_size=codes.shape[1])
        d = 1 if "_reverse" in t.name else 0
        g = "ifgo".index(t.name[-1])
        h = t.shape[0]
        onnx_gate = (0, 2, 3, 1)[g]
        np.testing.assert_array_equal(t.load(), full[d].T[onnx_gate * h:(onnx_gate + 1) * h])


# ---------------------------------------------------------------- bad input and the census


def test_a_wrong_scale_shape_fails_that_layer_alone(tmp_path):
    rng = np.random.default_rng(6)
    q, s, z = _quantize(rng.standard_normal((12, 10)).astype(np.float32), axis=1)
    good = rng.standard_normal((10, 16)).astype(np.float32)
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0),  # scale has 10, axis 0 has 12
             helper.make_node("MatMul", ["x", "w"], ["h"], name="/bad/MatMul"),
             helper.make_node("MatMul", ["h", "ok"], ["y"], name="/ok/MatMul")]
    path = tmp_path / "bad_scale.onnx"
    onnx.save(_model(nodes, [_init("w_q", q), _init("w_s", s), _init("w_z", z), _init("ok", good)]), str(path))
    report = htsr.analyze(path)
    d = report.details.set_index("name")
    assert d.loc["ok", "status"] == "success"
    reason = d.loc["w_q", "reason"]
    assert d.loc["w_q", "status"] == "invalid" and "\n" not in reason
    assert "'w_q'" in reason and "/bad/MatMul" in reason and "expected () or (12,)" in reason


def test_integer_weights_without_a_scheme_are_skipped_with_the_reason():
    rng = np.random.default_rng(7)
    codes = rng.integers(-128, 127, (20, 10), dtype=np.int8)
    mask = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["w_q"], ["w"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w"], ["h"], name="/fc/MatMul"),
             helper.make_node("Gemm", ["h", "head.weight"], ["g"], transB=1),
             helper.make_node("Add", ["g", "mask"], ["y"])]
    inits = [_init("w_q", codes), _init("head.weight", rng.standard_normal((12, 20)).astype(np.float32)),
             _init("mask", mask)]
    src = open_source(_model(nodes, inits))
    notes = {t.key: t.note for t in src.tensors}
    assert notes["w_q"].startswith("quantized weights, scheme not recognized: int8 tensor 'w_q'")
    assert notes["mask"] == "not a layer weight: used by Add" and notes["head.weight"] == ""
    report = htsr.analyze(_model(nodes, inits))
    assert list(report.details["name"]) == ["head"]
    assert set(report.skipped["name"]) >= {"w_q", "mask"}
    with pytest.raises(SourceError, match="not analyzed"):
        next(t for t in src.tensors if t.key == "mask").load()


def test_external_data_quantized_model_reads_one_tensor_at_a_time(tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    q, s, z = _quantize(rng.standard_normal((64, 32)).astype(np.float32), axis=1)
    f = rng.standard_normal((32, 16)).astype(np.float32)
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=1),
             helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("MatMul", ["h", "v"], ["y"])]
    path = tmp_path / "ext.onnx"
    onnx.save(_model(nodes, [_init("w_q", q), _init("w_s", s), _init("w_z", z), _init("v", f)]), str(path),
              save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    from htsr.sources import onnx_graph

    reads = []
    real = onnx_graph.read_proto
    monkeypatch.setattr(onnx_graph, "read_proto", lambda o, p, *a: reads.append(p.name) or real(o, p, *a))
    src = open_source(path)
    assert reads == []  # nothing is read to list the rows
    rows = _rows(src)
    np.testing.assert_array_equal(rows["v"].load(), f.T)
    assert reads == ["v"]
    expected = ((q.astype(np.int32) - z.astype(np.int32)).astype(np.float32) * s).T
    np.testing.assert_array_equal(rows["w_q"].load(), expected)
    assert reads[1:] == ["w_q", "w_s", "w_z"]
