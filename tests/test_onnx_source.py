"""ONNX files: initializers analyzed like a state dict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.errors import SourceError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model(weights: dict, path):
    inits = [numpy_helper.from_array(v.astype(np.float32), name=k) for k, v in weights.items()]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 30])
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1),
             helper.make_node("Gemm", ["h", "fc2.weight"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    onnx.save(helper.make_model(graph), str(path))


def test_onnx_initializers_match_the_numpy_dict(tmp_path):
    rng = np.random.default_rng(0)
    w = {"fc1.weight": rng.standard_normal((60, 40)), "fc1.bias": rng.standard_normal(60),
         "fc2.weight": rng.standard_normal((30, 60))}
    path = tmp_path / "m.onnx"
    _model(w, path)
    before = path.read_bytes()
    from_onnx = htsr.analyze(path).details
    from_dict = htsr.analyze({k: v.astype(np.float32) for k, v in w.items()}).details
    assert list(from_onnx["name"]) == ["fc1", "fc2"] and list(from_onnx["layer_id"]) == [1, 2]
    pd.testing.assert_frame_equal(from_onnx, from_dict)
    assert path.read_bytes() == before


def test_corrupt_onnx_is_a_source_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(SourceError, match="bad.onnx"):
        htsr.analyze(bad)


# ---------------------------------------------------------------- weights where the graph uses them


def _const_node(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name=name))


def _graph_model(nodes, inits=(), out="y"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=list(inits)))


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    return {"emb": f(50, 24), "dense": f(30, 24), "conv2d": f(16, 8, 3, 3), "conv1d": f(20, 6, 2), "gemm": f(12, 30)}


def test_constant_nodes_identity_matmul_gemm_conv_and_gather(tmp_path):
    """Every layout rule at once: rows equal the same weights given as a torch-layout dict."""
    w = _weights()
    nodes = [
        _const_node("emb_table", w["emb"]),
        helper.make_node("Identity", ["emb_table"], ["emb_alias"]),
        helper.make_node("Gather", ["emb_alias", "ids"], ["e"], name="/embed/Gather"),
        _const_node("onnx::MatMul_7", w["dense"].T.copy()),  # MatMul keeps (in, out)
        helper.make_node("MatMul", ["e", "onnx::MatMul_7"], ["h"], name="/encoder/fc/MatMul"),
        _const_node("conv.w", w["conv2d"]),
        helper.make_node("Conv", ["img", "conv.w"], ["c"], name="p2o.Conv.0"),
        helper.make_node("Conv", ["seq", "conv1d.weight"], ["s"], name="node_conv1d"),
        _const_node("head_t", w["gemm"].T.copy()),
        helper.make_node("Gemm", ["h", "head_t"], ["y"], name="/head/Gemm", transB=0),
    ]
    inits = [numpy_helper.from_array(w["conv1d"], name="conv1d.weight")]
    model = _graph_model(nodes, inits)
    path = tmp_path / "graph.onnx"
    onnx.save(model, str(path))
    got = htsr.analyze(path, seed=0).details
    assert list(got["name"]) == ["emb_table", "encoder.fc", "conv.w", "conv1d", "head_t"]
    assert list(got["layer_type"]) == ["embedding", "dense", "conv2d", "conv1d", "dense"]
    assert list(got["layer_id"]) == [1, 2, 3, 4, 5]
    ref = htsr.analyze({"a.embed.weight": w["emb"], "b.weight": w["dense"], "c.weight": w["conv2d"],
                        "d.weight": w["conv1d"], "e.weight": w["gemm"]}, seed=0).details
    cols = ["N", "M", "rf", "alpha", "D", "xmin", "log_norm", "stable_rank", "sv_max", "sv_min", "entropy"]
    pd.testing.assert_frame_equal(got[cols], ref[cols])
    # the in-memory ModelProto gives the same rows
    pd.testing.assert_frame_equal(htsr.analyze(model, seed=0).details.drop(columns=[]), got)


def test_a_constant_used_twice_is_analyzed_once(tmp_path):
    w = _weights()
    nodes = [_const_node("tok", w["emb"]),
             helper.make_node("Gather", ["tok", "ids"], ["e"]),
             helper.make_node("Transpose", ["tok"], ["tok_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["e", "tok_t"], ["y"], name="/lm_head/MatMul")]
    from htsr.sources import open_source

    src = open_source(_graph_model(nodes))
    assert [t.shape for t in src.tensors] == [(50, 24), (50, 24)]
    np.testing.assert_array_equal(src.tensors[1].load(), w["emb"])
    assert src.tensors[1].note == "tied: same tensor as tok"
    report = htsr.analyze(_graph_model(nodes))
    assert len(report.details) == 1 and report.skipped["reason"].str.startswith("tied").sum() == 1


def test_external_data_next_to_the_model_only(tmp_path):
    w = _weights()
    model = _graph_model([helper.make_node("Gemm", ["x", "fc.weight"], ["y"], transB=1)],
                         [numpy_helper.from_array(w["dense"], name="fc.weight")])
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    assert (tmp_path / "ext.data").is_file()
    from htsr.sources import open_source

    (t,) = open_source(path).tensors
    np.testing.assert_array_equal(t.load(), w["dense"])
    # a location outside the folder is refused, never read
    hostile = onnx.load(str(path), load_external_data=False)
    for e in hostile.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = "../secret.data"
    (tmp_path / "sub").mkdir()
    onnx.save(hostile, str(tmp_path / "sub" / "evil.onnx"))
    (tmp_path / "secret.data").write_bytes((tmp_path / "ext.data").read_bytes())
    with pytest.raises(SourceError, match="outside the model's folder"):
        open_source(tmp_path / "sub" / "evil.onnx").tensors[0].load()
    report = htsr.analyze(tmp_path / "sub" / "evil.onnx")  # a run reports the layer, never reads the file
    assert report.details.empty or report.details["status"].ne("success").all()


def test_a_torch_model_exported_to_onnx_gives_the_module_rows(tmp_path):
    torch = pytest.importorskip("torch")
    import warnings

    rng = np.random.default_rng(5)
    model = torch.nn.Sequential(torch.nn.Conv1d(6, 20, 3), torch.nn.Flatten(), torch.nn.Linear(160, 60),
                                torch.nn.ReLU(), torch.nn.Linear(60, 30, bias=False)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32)))
    path = tmp_path / "exported.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated; it needs no onnxscript
        torch.onnx.export(model, (torch.zeros(1, 6, 10),), str(path), dynamo=False)
    got = htsr.analyze(path, seed=0).details
    expected = htsr.analyze(model, seed=0).details
    assert list(got["name"]) == list(expected["longname"]) == ["0", "2", "4"]
    same = [c for c in expected.columns if c not in ("layer_id", "name", "longname")]
    pd.testing.assert_frame_equal(got[same], expected[same])


def test_a_graph_without_weights_says_what_it_holds(tmp_path):
    path = tmp_path / "relu.onnx"
    onnx.save(_graph_model([helper.make_node("Relu", ["x"], ["y"])]), str(path))
    with pytest.raises(SourceError, match="Relu"):
        htsr.analyze(path)


def test_compat_rows_match_the_reference_on_initializers():
    """The reference's ONNX table (tests/data/make/make_onnx_golden.py): 2-D/4-D initializers, 0-based ids."""
    from conftest import DATA
    from test_parity import assert_rows_match

    ref = pd.read_csv(DATA / "onnx_ww077.csv", keep_default_na=False, na_values=[])
    ours = htsr.WeightWatcher(model=str(DATA / "onnx_graph.onnx")).analyze()
    assert list(ours["layer_id"]) == list(ref["layer_id"]) == [0, 2, 3, 5, 6]
    assert_rows_match(ours, ref)
    in_memory = htsr.WeightWatcher(model=onnx.load(str(DATA / "onnx_graph.onnx"))).analyze()
    pd.testing.assert_frame_equal(in_memory, ours)
    # htsr.analyze: the graph's own view (node order, the conv1d too), same numbers for the shared layers
    own = htsr.analyze(DATA / "onnx_graph.onnx").details.set_index("name")
    assert list(own.index) == ["emb", "fc1", "mm", "conv", "c1", "head"]
    np.testing.assert_allclose(own.loc[["fc1", "mm", "conv", "emb", "head"], "alpha"], ref["alpha"], rtol=1e-9)
