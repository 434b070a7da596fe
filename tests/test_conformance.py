"""Conformance: one small model (dense, conv2d, conv1d, embedding) saved in every format htsr reads.

Every format must give the live module's rows — every column but the ids and names, which each format
spells its own way. A new reader is done when its format is in ``FORMATS`` and this test passes.
Formats whose package is not installed are skipped (the reader's own test file says which extra).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

import htsr

torch = pytest.importorskip("torch")
nn = torch.nn

IDS = ["layer_id", "name", "longname"]


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.a_dense = nn.Linear(40, 60)
        self.b_conv2d = nn.Conv2d(8, 16, 3)
        self.c_conv1d = nn.Conv1d(12, 20, 3)
        self.d_embed = nn.Embedding(80, 24)


def small() -> nn.Module:
    rng = np.random.default_rng(11)
    model = Small().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32)))
    return model


def weights(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- writers, one per format


def _safetensors(model, d: Path):
    from safetensors.numpy import save_file

    save_file(weights(model), str(d / "m.safetensors"))
    return d / "m.safetensors"


def _npz(model, d):
    np.savez(d / "m.npz", **weights(model))
    return d / "m.npz"


def _pt(obj_of: Callable, name: str):
    def write(model, d):
        torch.save(obj_of(model), d / name)
        return d / name
    return write


def _torchscript(model, d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), d / "m.pt")
    return d / "m.pt"


def _onnx_proto(model):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = weights(model)
    inits = [numpy_helper.from_array(w[k], name=k) for k in ("a_dense.weight", "b_conv2d.weight")]
    const = lambda name: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(w[name], name=name))
    nodes = [helper.make_node("Gemm", ["x", "a_dense.weight"], ["h"], transB=1),
             helper.make_node("Conv", ["img", "b_conv2d.weight"], ["c2"]),
             const("c_conv1d.weight"), helper.make_node("Conv", ["seq", "c_conv1d.weight"], ["c1"]),
             const("d_embed.weight"), helper.make_node("Gather", ["d_embed.weight", "ids"], ["e"])]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "e")]
    return helper.make_model(helper.make_graph(nodes, "small", [io[0]], [io[1]], initializer=inits))


def _onnx_file(model, d):
    onnx = pytest.importorskip("onnx")
    onnx.save(_onnx_proto(model), str(d / "m.onnx"))
    return d / "m.onnx"


def _gguf(model, d):
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(d / "m.gguf"), "llama")
    for k, v in weights(model).items():
        w.add_tensor(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return d / "m.gguf"


def _flax_tree(model):
    w = weights(model)
    return {"params": {"a_dense": {"kernel": w["a_dense.weight"].T.copy(), "bias": w["a_dense.bias"]},
                       "b_conv2d": {"kernel": w["b_conv2d.weight"].transpose(2, 3, 1, 0).copy()},
                       "c_conv1d": {"kernel": w["c_conv1d.weight"].transpose(2, 1, 0).copy()},
                       "d_embed": {"embedding": w["d_embed.weight"]}}}


def _flax_msgpack(model, d):
    msgpack = pytest.importorskip("msgpack")

    def default(obj):
        if isinstance(obj, np.ndarray):
            return msgpack.ExtType(1, msgpack.packb((obj.shape, obj.dtype.name, obj.tobytes("C")), use_bin_type=True))
        raise TypeError(type(obj))

    (d / "m.msgpack").write_bytes(msgpack.packb(_flax_tree(model), default=default, use_bin_type=True))
    return d / "m.msgpack"


def _keras_model(model):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("h5py")
    keras = pytest.importorskip("keras")
    w = weights(model)
    i1, i2, i3, i4 = keras.Input((40,)), keras.Input((10, 10, 8)), keras.Input((9, 12)), keras.Input((5,))
    outs = [keras.layers.Dense(60, name="a_dense")(i1), keras.layers.Conv2D(16, 3, name="b_conv2d")(i2),
            keras.layers.Conv1D(20, 3, name="c_conv1d")(i3), keras.layers.Embedding(80, 24, name="d_embed")(i4)]
    km = keras.Model([i1, i2, i3, i4], outs)
    km.get_layer("a_dense").kernel.assign(w["a_dense.weight"].T)
    km.get_layer("b_conv2d").kernel.assign(w["b_conv2d.weight"].transpose(2, 3, 1, 0))
    km.get_layer("c_conv1d").kernel.assign(w["c_conv1d.weight"].transpose(2, 1, 0))
    km.get_layer("d_embed").embeddings.assign(w["d_embed.weight"])
    return km


def _keras_file(name):
    def write(model, d):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Keras' torch backend under numpy 2
            _keras_model(model).save(d / name)
        return d / name
    return write


FORMATS: dict[str, Callable] = {
    "module": lambda m, d: m,
    "state-dict": lambda m, d: m.state_dict(),
    "numpy-dict": lambda m, d: weights(m),
    "safetensors": _safetensors,
    "npz": _npz,
    "pt-state-dict": _pt(lambda m: m.state_dict(), "sd.bin"),
    "pt-whole-model": _pt(lambda m: m, "model.pt"),
    "pt-checkpoint": _pt(lambda m: {"model": m, "epoch": 1}, "ckpt.pth"),
    "pt-legacy-whole-model": lambda m, d: (torch.save(m, d / "legacy.bin", _use_new_zipfile_serialization=False),
                                           d / "legacy.bin")[1],
    "torchscript": _torchscript,
    "onnx-file": _onnx_file,
    "onnx-proto": lambda m, d: _onnx_proto(m),
    "gguf": _gguf,
    "flax-msgpack": _flax_msgpack,
    "jax-pytree": lambda m, d: _flax_tree(m),
    "keras-model": lambda m, d: _keras_model(m),
    "keras-archive": _keras_file("m.keras"),
    "keras-legacy-h5": _keras_file("m.h5"),
}


@pytest.fixture(scope="module")
def expected():
    details = htsr.analyze(small(), seed=0).details
    assert list(details["layer_type"]) == ["dense", "conv2d", "conv1d", "embedding"]
    assert details["alpha"].notna().all()
    return details


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_gives_the_module_rows(fmt, expected, tmp_path):
    obj = FORMATS[fmt](small(), tmp_path)
    got = htsr.analyze(obj, seed=0).details
    order = ["dense", "conv2d", "conv1d", "embedding"]
    got = got.set_index("layer_type").loc[order].reset_index()
    want = expected.set_index("layer_type").loc[order].reset_index()
    cols = [c for c in want.columns if c not in IDS]
    pd.testing.assert_frame_equal(got[cols], want[cols], check_exact=True)


FILE_FORMATS = ["safetensors", "npz", "pt-state-dict", "pt-whole-model", "pt-checkpoint", "pt-legacy-whole-model",
                "torchscript", "onnx-file",
                "gguf", "flax-msgpack", "keras-archive", "keras-legacy-h5"]


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_the_command_line_reads_every_file_format(fmt, expected, tmp_path):
    import io

    from htsr import cli

    path = FORMATS[fmt](small(), tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["analyze", str(path), "--format", "csv"], stdout=out, stderr=err) == 0, err.getvalue()
    table = pd.read_csv(io.StringIO(out.getvalue()))
    assert sorted(table["layer_type"]) == sorted(expected["layer_type"])
    np.testing.assert_allclose(np.sort(table["alpha"]), np.sort(expected["alpha"]), rtol=1e-6)
    out = io.StringIO()
    assert cli.main(["describe", str(path), "--format", "csv"], stdout=out, stderr=err) == 0


# ---------------------------------------------------------------- the census: every tensor accounted for, once


class Census(nn.Module):
    """Every kind of tensor a reader meets: RNN layers and a cell, attention, a tied head, a 2-D buffer, a norm."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 12, num_layers=2, bidirectional=True)
        self.cell = nn.GRUCell(24, 10)
        self.attn = nn.MultiheadAttention(10, 2)
        self.norm = nn.LayerNorm(10)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("table", torch.randn(6, 10))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x, _ = self.lstm(self.embed(ids))
        h = self.cell(x[0])
        a, _ = self.attn(h[None], h[None], h[None])
        return self.norm(a[0]) + self.table[:1] + self.head(self.embed(ids))[0, :, :10]


def census_model() -> nn.Module:
    torch.manual_seed(5)
    return Census().eval()


def _census_torchscript(model, d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation; tracing warnings
        torch.jit.save(torch.jit.trace(model, torch.zeros(3, 2, dtype=torch.long)), d / "m.jit")  # any suffix
    return d / "m.jit"


CENSUS_FORMATS = ["module", "state-dict", "numpy-dict", "safetensors", "npz", "pt-state-dict", "pt-whole-model",
                  "pt-checkpoint", "pt-legacy-whole-model", "torchscript", "gguf"]


def input_tensors(fmt: str, model, obj) -> int:
    """How many tensors of two or more dimensions the input holds, counted without htsr."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return sum(v.ndim >= 2 for v in torch.jit.load(str(obj)).state_dict().values())
    if fmt in ("module", "state-dict", "numpy-dict", "safetensors", "npz", "pt-state-dict", "pt-whole-model",
               "pt-checkpoint", "pt-legacy-whole-model"):
        return sum(v.ndim >= 2 for v in model.state_dict().values())
    if fmt in ("onnx-file", "onnx-proto"):
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(obj)) if fmt == "onnx-file" else obj
        consts = [numpy_helper.to_array(i) for i in proto.graph.initializer]
        consts += [numpy_helper.to_array(a.t) for n in proto.graph.node if n.op_type == "Constant" for a in n.attribute]
        return sum(c.ndim >= 2 for c in consts)
    if fmt == "gguf":
        import gguf

        return sum(len([s for s in t.shape if s]) >= 2 for t in gguf.GGUFReader(str(obj)).tensors)
    if fmt in ("flax-msgpack", "jax-pytree"):
        def leaves(tree):
            for v in tree.values():
                yield from leaves(v) if isinstance(v, dict) else [v]
        return sum(np.ndim(v) >= 2 for v in leaves(_flax_tree(model)))
    if fmt == "keras-model":
        return sum(len(w.shape) >= 2 for w in obj.weights)
    import h5py  # keras files

    found: list = []
    if zipfile_member := (str(obj).endswith(".keras") and "model.weights.h5"):
        import zipfile

        with zipfile.ZipFile(obj) as zf, zf.open(zipfile_member) as fh, h5py.File(fh, "r") as f:
            f.visititems(lambda n, o: found.append(n) if getattr(o, "ndim", 0) >= 2 else None)
    else:
        with h5py.File(obj, "r") as f:
            f.visititems(lambda n, o: found.append(n) if getattr(o, "ndim", 0) >= 2 else None)
    return len(found)


def assert_census(obj, expected_count: int, what: str) -> None:
    """Every tensor of >= 2 dimensions is on exactly one row (or several gate rows), analyzed or skipped with a reason."""
    from htsr.config import AnalysisConfig
    from htsr.engine import plan
    from htsr.sources import open_source

    plans = [p for p in plan(open_source(obj), AnalysisConfig()) if len(p.tensor.shape) >= 2]
    by_key: dict[str, list] = {}
    for p in plans:
        by_key.setdefault(p.tensor.key, []).append(p)
    aux = [k for p in plans for k in p.tensor.aux]
    assert not set(aux) & set(by_key), what  # an auxiliary is never also a row
    assert len(by_key) + len(aux) == expected_count, f"{what}: {sorted(by_key)} + aux {aux}, expected {expected_count}"
    for key, rows in by_key.items():
        assert len(rows) == 1 or all(p.tensor.extra for p in rows), f"{what}: {key} on {len(rows)} rows"
    described = htsr.describe(obj)
    assert set(described["state"]) <= {"analyzed", "skipped", "auxiliary"}
    skipped = described[(described["state"] == "skipped") & (described["shape"].str.count(",") >= 1)]
    assert (skipped["reason"].str.len() > 0).all(), what
    assert (described["analyzed"] == (described["state"] == "analyzed")).all()
    listed = set(htsr.analyze(obj, mp_fit=False).skipped["longname"])  # Report.skipped lists the skipped ones
    assert {p.tensor.longname for p in plans if p.reason} <= listed, what


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_census_every_tensor_of_every_fixture_is_accounted_for(fmt, tmp_path):
    model = small()
    obj = FORMATS[fmt](model, tmp_path)
    assert_census(obj, input_tensors(fmt, model, obj), fmt)
    if fmt in CENSUS_FORMATS:
        rich = census_model()
        (tmp_path / "census").mkdir()
        writer = _census_torchscript if fmt == "torchscript" else FORMATS[fmt]
        obj = writer(rich, tmp_path / "census")
        assert_census(obj, input_tensors(fmt, rich, obj), f"{fmt} (LSTM, GRUCell, attention, buffer, tie)")
