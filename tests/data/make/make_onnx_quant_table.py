"""The ONNX rows of docs/formats.md's quantized-schemes table (issue 17, item 10).

One seeded heavy-tailed float matrix (and one seeded nn.LSTM) is quantized by onnxruntime's own
``quantize_static`` / ``quantize_dynamic`` (or, for ``DequantizeLinear`` after ``Gather``, by a graph
built with ``onnx.helper``). For each scheme this prints ``lambda_max`` and alpha of

* htsr reading the quantized ``.onnx`` file,
* the dequantized matrix (onnxruntime's ``DequantizeLinear`` of the stored codes, given to htsr as numpy) —
  the two must agree to 1e-10,
* the original float matrix, before quantization.

Run from the repository root (needs the ``test`` extra: onnx, onnxruntime, torch)::

    python tests/data/make/make_onnx_quant_table.py
"""

from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import htsr
from htsr.sources import open_source

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for the oracle helper
from test_onnx_graphs import _ort_dequantize  # noqa: E402


def _float_graph(path: Path, w: np.ndarray, emb: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], name="/embed/Gather"),
             helper.make_node("MatMul", ["e", "w"], ["y"], name="/fc/MatMul")]
    ins = [helper.make_tensor_value_info("ids", TensorProto.INT64, [4, 8])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs, initializer=[
        numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(w, "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _gather_dq(path: Path, emb: np.ndarray) -> None:
    """int8 table → Gather → DequantizeLinear (scale per embedding column): the pattern of issue 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scale = (np.abs(emb).max(axis=0) / 127).astype(np.float32)
    codes = np.clip(np.round(emb / scale), -127, 127).astype(np.int8)
    nodes = [helper.make_node("Gather", ["tok", "ids"], ["g"], name="/embed/Gather"),
             helper.make_node("DequantizeLinear", ["g", "tok_scale", "tok_zp"], ["y"], axis=-1)]
    model = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [4, 8])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[
        numpy_helper.from_array(codes, "tok"), numpy_helper.from_array(scale, "tok_scale"),
        numpy_helper.from_array(np.zeros_like(codes[0]), "tok_zp")]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _lstm(path: Path) -> np.ndarray:
    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(256, 128).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lstm, (torch.zeros(5, 1, 256),), str(path), dynamo=False)
    return lstm.weight_ih_l0.detach().numpy()[:128].copy()  # gate i


def main() -> None:
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    logging.getLogger().setLevel(logging.ERROR)
    rng = np.random.default_rng(17)
    w = (rng.standard_t(3, (128, 512)) * 0.05).astype(np.float32)  # MatMul B: (in, out)
    emb = (rng.standard_t(3, (1000, 128)) * 0.05).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"ids": rng.integers(0, 1000, (4, 8))} for _ in range(2)])

        def get_next(self):
            return next(self.it, None)

    tmp = Path(tempfile.mkdtemp())
    _float_graph(tmp / "f.onnx", w, emb)
    made = {}
    for name, make in {
        "qdq": lambda p: quantize_static(str(tmp / "f.onnx"), p, Reader(), quant_format=QuantFormat.QDQ),
        "qdq-channel": lambda p: quantize_static(str(tmp / "f.onnx"), p, Reader(), quant_format=QuantFormat.QDQ,
                                                 per_channel=True),
        "qlinear": lambda p: quantize_static(str(tmp / "f.onnx"), p, Reader(), quant_format=QuantFormat.QOperator,
                                             weight_type=QuantType.QUInt8, activation_type=QuantType.QUInt8),
        "integer": lambda p: quantize_dynamic(str(tmp / "f.onnx"), p, op_types_to_quantize=["MatMul"]),
    }.items():
        make(str(tmp / f"{name}.onnx"))
        made[name] = (tmp / f"{name}.onnx", "w", w.T)
    _gather_dq(tmp / "gather.onnx", emb)
    made["gather-dq"] = (tmp / "gather.onnx", "tok", emb)
    gate = _lstm(tmp / "lstm.onnx")
    quantize_dynamic(str(tmp / "lstm.onnx"), str(tmp / "lstm_q.onnx"), op_types_to_quantize=["LSTM"])
    made["dynlstm"] = (tmp / "lstm_q.onnx", None, gate)

    print("| scheme (`storage`) | how made | λ_max / alpha, htsr on the file | dequantized matrix | |Δ| rel. "
          "| original float | codes read as values |")
    print("|---|---|---|---|---|---|---|")
    how = {"qdq": "`quantize_static` QDQ", "qdq-channel": "`quantize_static` QDQ `per_channel`",
           "qlinear": "`quantize_static` QOperator uint8", "integer": "`quantize_dynamic` MatMul",
           "gather-dq": "`onnx.helper`: int8 table, Gather → DequantizeLinear(axis=-1)",
           "dynlstm": "`quantize_dynamic` of an exported `nn.LSTM(256, 128)`, gate `weight_ih_l0.i`"}
    for name, (path, key, original) in made.items():
        src = open_source(path)
        if key is None:
            t = next(t for t in src.tensors if t.name == "weight_ih_l0.i")
            deq = t.load()  # the direction/gate slice of onnxruntime's dequantization, checked in the tests
            codes = None
        else:
            t = next(t for t in src.tensors if t.key.removesuffix("_quantized") == key and not t.note)
            inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
            scale, zp = inits[t.aux[0]], inits[t.aux[1]] if len(t.aux) > 1 else None
            zp = zp if zp is not None else np.zeros(scale.shape, inits[t.key].dtype)
            (oracle,) = _ort_dequantize([(inits[t.key], scale, zp, 1)])
            deq = oracle.T if oracle.shape != t.shape else oracle
            codes = inits[t.key].astype(np.float32)
        row = htsr.analyze(path, seed=0).details.set_index("longname").loc[t.longname]
        d = htsr.analyze({"x.weight": np.ascontiguousarray(deq)}, seed=0).details.iloc[0]
        o = htsr.analyze({"x.weight": np.ascontiguousarray(original)}, seed=0).details.iloc[0]
        c = htsr.analyze({"x.weight": codes}, seed=0).details.iloc[0] if codes is not None else None
        rel = max(abs(row["lambda_max"] - d["lambda_max"]) / d["lambda_max"], abs(row["alpha"] - d["alpha"]) / d["alpha"])
        print(f"| `{t.storage}` | {how[name]} | {row['lambda_max']:.6g} / {row['alpha']:.4f} | "
              f"{d['lambda_max']:.6g} / {d['alpha']:.4f} | {rel:.1e} | {o['lambda_max']:.6g} / {o['alpha']:.4f} | "
              + (f"{c['lambda_max']:.3g} / {c['alpha']:.4f} |" if c is not None else "— |"))


if __name__ == "__main__":
    main()
