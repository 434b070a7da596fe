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
