"""Golden data for ONNX: the reference tool's rows for a small graph whose weights are initializers.

The graph (built with ``onnx.helper`` from seeded weights) uses every layout htsr handles: an embedding
Gather, Gemm with transB=1 and transB=0, MatMul with an (in, out) weight, Conv 2-D and 1-D.

Regenerate (the reference's interpreter, with ``onnx`` installed next to weightwatcher 0.7.7):

    "$WW_PYTHON" tests/data/make/make_onnx_golden.py

Writes ``tests/data/onnx_graph.onnx`` and ``tests/data/onnx_ww077.csv``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import weightwatcher as ww
from onnx import TensorProto, helper, numpy_helper

DATA = Path(__file__).resolve().parents[1]


def graph() -> onnx.ModelProto:
    rng = np.random.default_rng(11)

    def t(*shape):
        return rng.standard_t(4, shape).astype(np.float32)

    w = {"fc1.weight": t(96, 64), "fc1.bias": t(96), "mm.weight": t(96, 48), "conv.weight": t(24, 16, 3, 3),
         "c1.weight": t(20, 12, 3), "emb.weight": t(120, 32), "head.weight": t(48, 40)}
    nodes = [helper.make_node("Gather", ["emb.weight", "ids"], ["e"]),
             helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1),
             helper.make_node("MatMul", ["h", "mm.weight"], ["h2"]),
             helper.make_node("Conv", ["img", "conv.weight"], ["c"]),
             helper.make_node("Conv", ["seq", "c1.weight"], ["s"]),
             helper.make_node("Gemm", ["h2", "head.weight"], ["y"], transB=0)]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "y")]
    inits = [numpy_helper.from_array(v, name=k) for k, v in w.items()]
    return helper.make_model(helper.make_graph(nodes, "golden", [io[0]], [io[1]], initializer=inits))


def main() -> None:
    logging.disable(logging.WARNING)
    model = graph()
    onnx.save(model, str(DATA / "onnx_graph.onnx"))
    details = ww.WeightWatcher(model=onnx.load(str(DATA / "onnx_graph.onnx"))).analyze()
    details.to_csv(DATA / "onnx_ww077.csv", index=False)
    print(details[["layer_id", "name", "N", "M", "alpha", "log_norm"]])


if __name__ == "__main__":
    main()
