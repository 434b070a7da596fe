"""Robustness: clear errors, broken layers, hostile pickles, nothing modified, atomic outputs, determinism, memory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import htsr
from htsr import matrices
from htsr.errors import HtsrError, LayerError, SourceError, UnsafeFileError

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def healthy(seed: int = 0, shape=(60, 30)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> Path:
    """A safetensors file written by hand: {key: (dtype code, shape, raw little-endian bytes)}."""
    header, blobs, pos = {}, [], 0
    for key, (code, shape, raw) in tensors.items():
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- 1. clear errors naming the path

def assert_error_names(exc_info, path) -> None:
    assert isinstance(exc_info.value, HtsrError)
    assert str(path) in str(exc_info.value)


def test_missing_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(SourceError) as e:
        htsr.analyze(path)
    assert_error_names(e, path)
    assert "no such file" in str(e.value)


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", {"w": ("F32", (20, 10), healthy(0, (20, 10)).astype("<f4").tobytes())})
    path.chmod(0)
    try:
        with pytest.raises(SourceError) as e:
            htsr.analyze(path)
        assert_error_names(e, path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("ext", [".safetensors", ".npz", ".bin", ".pt"])
def test_a_folder_or_pipe_with_a_model_name_is_refused_without_blocking(tmp_path, ext):
    pipe = tmp_path / f"pipe{ext}"
    os.mkfifo(pipe)  # opening it for reading would block forever
    with pytest.raises(SourceError) as e:
        htsr.analyze(pipe)
    assert_error_names(e, pipe)
    assert "not a regular file" in str(e.value)
    folder = tmp_path / f"dir{ext}"
    folder.mkdir()
    with pytest.raises(SourceError) as e:
        htsr.analyze(folder)
    assert_error_names(e, folder)


def test_bad_path_strings():
    with pytest.raises(SourceError):
        htsr.analyze("bad\0name.safetensors")
    with pytest.raises(SourceError):
        htsr.analyze("x" * 5000 + ".safetensors")


@pytest.fixture
def good_safetensors(tmp_path) -> Path:
    return write_safetensors(tmp_path / "good.safetensors", {
        "a.weight": ("F32", (40, 20), healthy(1, (40, 20)).astype("<f4").tobytes()),
        "b.weight": ("F32", (30, 20), healthy(2, (30, 20)).astype("<f4").tobytes()),
    })


@pytest.mark.parametrize("cut", [0, 4, 8, 20, -1, -500])
def test_truncated_safetensors(tmp_path, good_safetensors, cut):
    data = good_safetensors.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(SourceError) as e:
        htsr.analyze(path)
    assert_error_names(e, path)


@pytest.mark.parametrize("header, words", [
    (b"{not json", "corrupt safetensors header"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"w": {"dtype": ["F32"], "shape": [2, 2], "data_offsets": [0, 16]}}', "'w'"),
    (b'{"w": {"dtype": "F32", "shape": [1' + b"0" * 400 + b'], "data_offsets": [0, 16]}}', "'w'"),
    (b'{"w": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}}', "bad shape"),
    (b'{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}}', "data_offsets"),
    (b'{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}', "do not match"),
    (b"[" * 50000 + b"]" * 50000, "corrupt safetensors header"),
    (b"\xff\xfe garbage", "corrupt safetensors header"),
])
def test_corrupt_safetensors_header(tmp_path, header, words):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(SourceError) as e:
        htsr.analyze(path)
    assert_error_names(e, path)
    assert words in str(e.value)


@pytest.mark.parametrize("ext", [".safetensors", ".npz", ".bin", ".pt", ".pth"])
def test_random_bytes_with_a_model_extension(tmp_path, ext):
    path = tmp_path / f"random{ext}"
    path.write_bytes(np.random.default_rng(7).bytes(4096))
    with pytest.raises(SourceError) as e:
        htsr.analyze(path)
    assert_error_names(e, path)


def test_empty_folder_and_empty_file(tmp_path):
    with pytest.raises(SourceError) as e:
        htsr.analyze(tmp_path)
    assert_error_names(e, tmp_path)
    for ext in (".safetensors", ".npz", ".pt"):
        path = tmp_path / f"empty{ext}"
        path.write_bytes(b"")
        with pytest.raises(SourceError) as e:
            htsr.analyze(path)
        assert_error_names(e, path)


def test_unknown_objects_and_extensions(tmp_path):
    for obj in (object(), [np.ones((20, 20))], 42, b"model.safetensors"):
        with pytest.raises(SourceError, match="cannot read an object of type"):
            htsr.analyze(obj)
    with pytest.raises(SourceError, match="holds no tensors"):
        htsr.analyze({"a": "text", "b": 3})
    path = tmp_path / "weights.txt"
    path.write_text("hello")
    with pytest.raises(SourceError) as e:
        htsr.analyze(path)
    assert_error_names(e, path)


def test_sharded_index_naming_a_missing_or_outside_shard(tmp_path, good_safetensors):
    folder = tmp_path / "hf"
    folder.mkdir()
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a.weight": "model-1.safetensors"}}))
    with pytest.raises(SourceError, match="missing") as e:
        htsr.analyze(folder)
    assert_error_names(e, index)
    index.write_text(json.dumps({"weight_map": {"a.weight": "../good.safetensors"}}))
    with pytest.raises(SourceError, match="outside"):
        htsr.analyze(folder)
    index.write_text("{broken")
    with pytest.raises(SourceError, match="index"):
        htsr.analyze(folder)


def test_command_line_prints_one_error_line_and_exits_1(tmp_path):
    cli = pytest.importorskip("htsr.cli")
    path = tmp_path / "random.safetensors"
    path.write_bytes(np.random.default_rng(8).bytes(100))
    for target in (path, tmp_path / "missing.pt"):
        out, err = io.StringIO(), io.StringIO()
        assert cli.main(["analyze", str(target)], stdout=out, stderr=err) == 1
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("htsr: error: ") and str(target) in lines[0]
    proc = subprocess.run([sys.executable, "-m", "htsr", "analyze", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("htsr: error: ") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- 2. a broken layer never stops the run

def broken_layers() -> dict:
    W = healthy(3, (50, 20))
    nan = W.copy()
    nan.flat[:12] = np.nan
    inf = W.copy()
    inf.flat[[0, 5]] = [np.inf, -np.inf]
    return {
        "nan.weight": nan, "inf.weight": inf, "zero.weight": np.zeros((50, 20)),
        "const.weight": np.full((50, 20), 0.3), "rank1.weight": np.outer(np.arange(1, 51), np.arange(1, 21)) / 100.0,
        "row.weight": healthy(4, (1, 50)), "int8.weight": np.round(W * 20).astype(np.int8),
        "uint8.weight": np.round(W * 20 + 128).astype(np.uint8), "half.weight": W.astype(np.float16),
        "complex.weight": W + 1j * W, "huge.weight": W * 1e200, "object.weight": W.astype(object),
        "empty.weight": np.zeros((0, 20)), "ok.weight": W,
    }


def test_every_broken_layer_gets_a_row_and_the_healthy_layer_is_analyzed():
    report = htsr.analyze(broken_layers())
    d = report.details.set_index("name")
    status, reason = d["status"].to_dict(), d["reason"].to_dict()
    assert status["ok"] == "success" and reason["ok"] == ""
    assert (status["nan"], reason["nan"]) == ("invalid", "invalid: 12 NaN entries")
    assert (status["inf"], reason["inf"]) == ("invalid", "invalid: 2 Inf entries")
    assert (status["zero"], reason["zero"]) == ("invalid", "invalid: all entries are zero")
    assert status["complex"] == "invalid" and "complex" in reason["complex"]
    assert status["huge"] == "invalid" and "overflow" in reason["huge"]
    assert status["object"] == "invalid" and "unsupported dtype object" in reason["object"]
    # constant and rank-one matrices are meaningful: analyzed, one eigenvalue, so the fit fails
    for name in ("const", "rank1"):
        assert status[name] == "failed" and np.isnan(d.loc[name, "alpha"]) and "eigenvalues above" in reason[name]
        assert d.loc[name, "matrix_rank"] == 1 and d.loc[name, "has_esd"]
        np.testing.assert_allclose(d.loc[name, "norm"], np.sum(broken_layers()[name + ".weight"] ** 2), rtol=1e-12)
    assert status["half"] == "success" and reason["half"] == ""
    # a 1×N matrix has one eigenvalue: the min_evals gate lists it in .skipped; an empty matrix too
    skipped = report.skipped.set_index("name")["reason"].to_dict()
    # integer codes are not values: skipped with a reason, unless integer_values=True (then analyzed as floats)
    integers = htsr.analyze(broken_layers(), integer_values=True, layers=["int8", "uint8"]).details.set_index("name")
    for name in ("int8", "uint8"):
        assert f"integer tensor ({name})" in skipped[name] and "integer_values=True" in skipped[name]
        assert integers.loc[name, "status"] == "success"
        assert integers.loc[name, "reason"] == f"{name} weights analyzed as floats"
    assert "min_evals" in skipped["row"] and skipped["empty"] == "empty tensor"
    assert set(d.index) | set(skipped) == {k[: -len(".weight")] for k in broken_layers()}


def test_a_1xN_matrix_let_through_the_gate_fails_the_fit_cleanly():
    d = htsr.analyze({"row.weight": healthy(4, (1, 50)), "ok.weight": healthy(0)}, min_evals=1).details
    row = d.set_index("name").loc["row"]
    assert row["status"] == "failed" and np.isnan(row["alpha"]) and row["num_evals"] == 1


def test_low_precision_and_quantized_dtypes_in_safetensors(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    W = healthy(5, (48, 24)).astype(np.float32)
    nan_bf16 = W.astype(ml_dtypes.bfloat16)
    nan_bf16[0, :7] = np.nan
    path = write_safetensors(tmp_path / "q.safetensors", {
        "f16.weight": ("F16", W.shape, W.astype("<f2").tobytes()),
        "bf16.weight": ("BF16", W.shape, W.astype(ml_dtypes.bfloat16).tobytes()),
        "bf16nan.weight": ("BF16", W.shape, nan_bf16.tobytes()),
        "e4m3.weight": ("F8_E4M3", W.shape, W.astype(ml_dtypes.float8_e4m3fn).tobytes()),
        "e5m2.weight": ("F8_E5M2", W.shape, W.astype(ml_dtypes.float8_e5m2).tobytes()),
        "i8.weight": ("I8", W.shape, np.round(W * 30).astype(np.int8).tobytes()),
        "u8.weight": ("U8", W.shape, np.round(W * 30 + 128).astype(np.uint8).tobytes()),
        "c64.weight": ("C64", W.shape, (W + 1j).astype("<c8").tobytes()),
        "f4.weight": ("F4", W.shape, bytes(W.size // 2)),  # a dtype htsr does not decode
        "ok.weight": ("F32", W.shape, W.astype("<f4").tobytes()),
    })
    d = htsr.analyze(path).details.set_index("name")
    ok = d.loc["ok"]
    for name, cast in (("f16", np.float16), ("bf16", ml_dtypes.bfloat16), ("e4m3", ml_dtypes.float8_e4m3fn),
                       ("e5m2", ml_dtypes.float8_e5m2)):
        assert d.loc[name, "status"] == "success", name
        want = np.sum(W.astype(cast).astype(np.float64) ** 2)  # the decoded values, exactly
        np.testing.assert_allclose(d.loc[name, "norm"], want, rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(d.loc["bf16", "alpha"], ok["alpha"], rtol=0.05)
    assert d.loc["bf16nan", "reason"] == "invalid: 7 NaN entries"
    assert "i8" not in d.index and "u8" not in d.index  # integer codes are not values (integer_values=False)
    ints = htsr.analyze(path, integer_values=True, layers=["i8", "u8"]).details.set_index("name")
    assert ints.loc["i8", "reason"] == "int8 weights analyzed as floats" and ints.loc["i8", "status"] == "success"
    assert ints.loc["u8", "reason"] == "uint8 weights analyzed as floats"
    assert d.loc["c64", "status"] == "invalid" and "complex" in d.loc["c64", "reason"]
    assert d.loc["f4", "status"] == "invalid" and "F4 is not supported" in d.loc["f4", "reason"]


def test_torch_quantized_sparse_and_low_precision_tensors():
    torch = pytest.importorskip("torch")
    W = torch.from_numpy(healthy(6, (40, 20)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated in torch, still found in checkpoints
        q = torch.quantize_per_tensor(W, scale=0.05, zero_point=0, dtype=torch.qint8)
    sd = {"q.weight": q, "sparse.weight": W.to_sparse(), "bf.weight": W.to(torch.bfloat16),
          "fp8.weight": W.to(torch.float8_e4m3fn), "c.weight": torch.complex(W, W), "ok.weight": W}
    d = htsr.analyze(sd).details.set_index("name")
    assert d.loc["ok", "status"] == "success"
    np.testing.assert_allclose(d.loc["sparse", "norm"], d.loc["ok", "norm"], rtol=1e-12)
    np.testing.assert_allclose(d.loc["q", "norm"], float((q.dequantize().double() ** 2).sum()), rtol=1e-9)
    for name in ("q", "sparse", "bf", "fp8"):
        assert d.loc[name, "status"] == "success", name
    assert d.loc["c", "status"] == "invalid"


def test_a_layer_that_cannot_be_read_gets_a_row(tmp_path, good_safetensors):
    """The file shrinks after its header was read: that layer is invalid, the run goes on."""
    source = htsr.sources.open_source(good_safetensors)
    data = good_safetensors.read_bytes()
    good_safetensors.write_bytes(data[:-100])  # cuts into b.weight, the last tensor
    d = htsr.analyze(source).details.set_index("name")
    assert d.loc["a", "status"] == "success"
    assert d.loc["b", "status"] == "invalid" and str(good_safetensors) in d.loc["b", "reason"]


def test_as_float_always_copies_and_checks():
    W = healthy(0, (20, 10))
    out, note = matrices.as_float(W, "w")
    assert out is not W and not np.shares_memory(out, W) and note == ""
    with pytest.raises(LayerError, match="1 NaN and 1 Inf"):
        matrices.as_float(np.array([[np.nan, np.inf], [1.0, 2.0]]), "w")
    with pytest.raises(LayerError, match="unsupported dtype"):
        matrices.as_float(np.zeros((3, 3), dtype="datetime64[s]") + 1, "w")



@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_as_float_checks_on_the_stored_dtype(dtype):
    """NaN/Inf, all-zero and overflow are found before the float64 copy, whatever the stored float type."""
    W = healthy(1, (30, 20)).astype(dtype)
    out, _ = matrices.as_float(W, "w")
    assert out.dtype == np.float64 and np.array_equal(out, W.astype(np.float64))
    bad = W.copy()
    bad[0, 0], bad[3, 1], bad[5, 2] = np.nan, -np.inf, np.nan
    with pytest.raises(LayerError, match="2 NaN and 1 Inf"):
        matrices.as_float(bad, "w")
    with pytest.raises(LayerError, match="1 Inf"):
        matrices.as_float(np.where(np.arange(W.size).reshape(W.shape) == 7, np.inf, W).astype(dtype), "w")
    with pytest.raises(LayerError, match="all entries are zero"):
        matrices.as_float(np.zeros_like(W), "w")
    with pytest.raises(LayerError, match="all entries are zero"):
        matrices.as_float(-np.zeros_like(W), "w")
    if dtype == "float64":
        with pytest.raises(LayerError, match="overflow"):
            matrices.as_float(W * 1e160, "w")
    neg = -np.abs(W)  # peak from the minimum
    assert matrices.as_float(neg, "w")[0].min() == float(neg.min())

# ---------------------------------------------------------------- 3. never execute code from a file

class Payload:
    """Unpickling this creates the file named by ``target`` (via os.system)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class OpenPayload(Payload):
    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("ext", [".bin", ".pt", ".pth"])
@pytest.mark.parametrize("how", ["plain-pickle-2", "plain-pickle-5", "torch-save", "torch-save-legacy", "open"])
def test_a_pickle_payload_is_refused_and_never_runs(tmp_path, ext, how):
    torch = pytest.importorskip("torch")
    target = tmp_path / "PWNED"
    path = tmp_path / f"evil{ext}"
    payload = OpenPayload(target) if how == "open" else Payload(target)
    obj = {"layer.weight": torch.zeros(20, 20), "x": payload}
    if how.startswith("plain-pickle"):
        path.write_bytes(pickle.dumps({"x": payload}, protocol=int(how[-1])))
    elif how == "torch-save-legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(obj, path)
    assert not target.exists()
    with pytest.raises(UnsafeFileError) as e:
        htsr.analyze(path)
    assert_error_names(e, path)
    assert "refused" in str(e.value) and ("system" in str(e.value) or "open" in str(e.value))
    with pytest.raises(UnsafeFileError):
        htsr.WeightWatcher(model=str(path)).analyze()
    assert not target.exists()


def test_an_npz_object_array_is_never_unpickled(tmp_path):
    target = tmp_path / "PWNED"
    payload = np.empty((20, 20), dtype=object)
    payload[0, 0] = Payload(target)
    path = tmp_path / "evil.npz"
    np.savez(path, **{"evil.weight": payload, "ok.weight": healthy(0)})  # np.savez pickles object arrays
    report = htsr.analyze(path)
    d = report.details.set_index("name")
    assert d.loc["ok", "status"] == "success"
    assert d.loc["evil", "status"] == "invalid" and str(path) in d.loc["evil", "reason"]
    assert not target.exists()


def test_a_module_whose_weight_attribute_raises_does_not_stop_the_run():
    torch = pytest.importorskip("torch")

    class Broken(torch.nn.Module):
        @property
        def weight(self):
            raise RuntimeError("computed weight failed")

    model = torch.nn.Sequential(torch.nn.Linear(30, 20), Broken())
    assert list(htsr.analyze(model).details["longname"]) == ["0"]


# ---------------------------------------------------------------- 4. never modify the user's things

def params_bytes(model) -> dict:
    return {k: v.detach().clone().numpy().tobytes() for k, v in model.state_dict(keep_vars=True).items()}


def test_model_parameters_are_bit_identical_after_every_call(tmp_path):
    pytest.importorskip("torch")
    from test_sources import make_tiny

    model = make_tiny(1)
    before = params_bytes(model)
    attrs = {name: sorted(vars(m)) for name, m in model.named_modules()}
    grads = [p.requires_grad for p in model.parameters()]
    calls = [lambda: htsr.analyze(model), lambda: htsr.describe(model),
             lambda: htsr.analyze(model, randomize=True, mp_fit=True, seed=3),
             lambda: htsr.analyze(model, pool=False, conv2d_norm=True),
             lambda: htsr.WeightWatcher(model=model).analyze(randomize=True, mp_fit=True),
             lambda: htsr.WeightWatcher(model=model).describe(),
             lambda: htsr.WeightWatcher(model=model).get_ESD(layer=3),
             lambda: htsr.WeightWatcher(model=model).get_Weights(layer=3)]
    for call in calls:
        report = call()
        if hasattr(report, "to_csv"):
            report.to_csv(tmp_path / "out.csv")
            report.to_json(tmp_path / "out.json")
        assert params_bytes(model) == before
    assert {name: sorted(vars(m)) for name, m in model.named_modules()} == attrs  # no attributes added
    assert [p.requires_grad for p in model.parameters()] == grads
    assert model.training is False


def test_model_parameters_are_bit_identical_after_plotting(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.Conv2d(12, 16, 3))
    with torch.no_grad():
        for k, p in enumerate(model.parameters()):
            p.copy_(torch.from_numpy(np.random.default_rng(k).standard_normal(tuple(p.shape)).astype(np.float32)))
    before = params_bytes(model)
    report = htsr.analyze(model, savefig=str(tmp_path / "figs"), randomize=True, mp_fit=True)
    assert len(report.details) == 2 and any((tmp_path / "figs").iterdir())
    assert params_bytes(model) == before


@pytest.mark.parametrize("name", ["remove_traps", "SVDSmoothing", "SVDSharpness"])
def test_transforms_return_copies_unless_inplace(name):
    torch = pytest.importorskip("torch")
    from htsr import transforms

    def fresh():
        model = torch.nn.Sequential(torch.nn.Linear(40, 60), torch.nn.Linear(60, 30))
        with torch.no_grad():
            for k, p in enumerate(model.parameters()):
                p.copy_(torch.from_numpy(np.random.default_rng(k).standard_normal(tuple(p.shape)).astype(np.float32)))
        return model

    transform = getattr(transforms, name)
    model = fresh()
    before = params_bytes(model)
    out = transform(model)
    assert out is not model and params_bytes(model) == before
    arrays = {k: v.detach().numpy().copy() for k, v in fresh().state_dict().items()}
    snapshot = {k: v.tobytes() for k, v in arrays.items()}
    out = transform(arrays)
    assert out is not arrays and {k: v.tobytes() for k, v in arrays.items()} == snapshot
    model = fresh()
    assert transform(model, inplace=True) is model


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    figs = tmp_path / "figs"

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        htsr.analyze({"a.weight": healthy(0)}, savefig=str(figs))
    assert not figs.exists() or list(figs.rglob("*")) == []  # no half-written PNG, no temporary


def test_numpy_arrays_are_left_as_they_were():
    W = healthy(0, (40, 20)).astype(np.float32)
    C = np.random.default_rng(1).standard_normal((8, 4, 3, 3))
    W.flags.writeable = False  # any write attempt would raise
    snapshot = {"a.weight": W.tobytes(), "conv.weight": C.tobytes()}
    sd = {"a.weight": W, "conv.weight": C}
    htsr.analyze(sd, randomize=True, mp_fit=True)
    htsr.analyze(sd, pool=False)
    assert {k: v.tobytes() for k, v in sd.items()} == snapshot and C.flags.writeable


def test_input_files_are_byte_identical_afterwards(tmp_path):
    torch = pytest.importorskip("torch")
    from test_sources import make_tiny, sharded_folder
    safetensors_numpy = pytest.importorskip("safetensors.numpy")

    model = make_tiny(2)
    arrays = {k: v.numpy() for k, v in model.state_dict().items()}
    paths = [tmp_path / "m.safetensors", tmp_path / "m.npz", tmp_path / "m.pt", tmp_path / "legacy.bin"]
    safetensors_numpy.save_file(arrays, str(paths[0]))
    np.savez(paths[1], **arrays)
    torch.save(model.state_dict(), paths[2])
    torch.save(model.state_dict(), paths[3], _use_new_zipfile_serialization=False)
    folder = sharded_folder(tmp_path / "hf", arrays, list(arrays))
    all_files = paths + sorted(folder.iterdir())
    before = {p: (sha(p), p.stat().st_mtime_ns) for p in all_files}
    for target in paths + [folder]:
        htsr.analyze(target, randomize=True, mp_fit=True)
        htsr.describe(target)
    assert {p: (sha(p), p.stat().st_mtime_ns) for p in all_files} == before
    assert sorted(folder.iterdir()) == sorted(p for p in all_files if p.parent == folder)  # nothing written there


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    report = htsr.analyze({"a.weight": healthy(0)})
    target = tmp_path / "details.csv"
    target.write_text("previous run\n")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    for write in (report.to_csv, report.to_json):
        with pytest.raises(KeyboardInterrupt):
            write(target)
        assert target.read_text() == "previous run\n"  # the old file is untouched, never half-written
        assert sorted(p.name for p in tmp_path.iterdir()) == ["details.csv"]  # no temporary left behind
    monkeypatch.undo()
    report.to_csv(target)
    assert target.read_text() == report.to_csv()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["details.csv"]


# ---------------------------------------------------------------- 5. determinism

def _determinism_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    tensors = {f"layers.{i}.weight": ("F32", (80, 40), rng.standard_normal((80, 40)).astype("<f4").tobytes())
               for i in range(3)}
    trap = rng.standard_normal((256, 256)).astype("<f4") / 16
    trap[10, 20] = 10.0
    tensors["trap.weight"] = ("F32", trap.shape, trap.tobytes())
    conv = rng.standard_normal((16, 8, 3, 3)).astype("<f4")
    tensors["conv.weight"] = ("F32", conv.shape, conv.tobytes())
    return write_safetensors(tmp_path / "m.safetensors", tensors)


RUN = ("import sys, htsr\n"
       "for k in range(int(sys.argv[3])):\n"
       "    htsr.analyze(sys.argv[1], randomize=True, mp_fit=True, seed=5, workers=int(sys.argv[4]))"
       ".to_csv(f'{sys.argv[2]}.{k}')\n")


def _runs(path: Path, tmp_path: Path, processes: int, runs: int, workers: int) -> list[bytes]:
    outs = []
    for p in range(processes):
        stem = tmp_path / f"out{p}"
        subprocess.run([sys.executable, "-c", RUN, str(path), str(stem), str(runs), str(workers)], check=True)
        outs += [Path(f"{stem}.{k}").read_bytes() for k in range(runs)]
    return outs


def test_same_input_and_seed_give_byte_identical_csv_on_every_run(tmp_path):
    """Two processes, two runs each, and the test process: the same bytes every time."""
    path = _determinism_file(tmp_path)
    outs = _runs(path, tmp_path, processes=2, runs=2, workers=0)  # default: one worker thread per core
    assert all(o == outs[0] for o in outs)
    assert outs[0].count(b"\n") == 6 and b"rand_" in outs[0].split(b"\n")[0]
    assert htsr.analyze(path, randomize=True, mp_fit=True, seed=5).to_csv().encode() == outs[0]
    # every CPU path computes a layer with single-threaded BLAS: one worker gives the same bytes
    import threadpoolctl

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # whatever the caller has set
        single = [htsr.analyze(path, randomize=True, mp_fit=True, seed=5, workers=1).to_csv().encode()
                  for _ in range(2)]
    assert single[0] == single[1] == outs[0]
    other_seed = htsr.analyze(path, randomize=True, mp_fit=True, seed=6).to_csv().encode()
    assert other_seed != outs[0]  # the seed matters, so the equality above is not vacuous


# ---------------------------------------------------------------- 7. memory

def test_available_memory_is_read_from_the_os():
    avail = matrices.available_memory()
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo")
    kib = next(int(line.split()[1]) for line in meminfo.read_text().splitlines() if line.startswith("MemAvailable:"))
    assert 0 < avail <= kib * 1024 * 1.1


def test_a_layer_that_would_not_fit_in_memory_is_skipped_with_a_reason(monkeypatch):
    small, big = healthy(0, (40, 20)), healthy(1, (400, 200))
    need_small = matrices.work_bytes(small.shape, 8)
    need_big = matrices.work_bytes(big.shape, 8)
    assert need_big >= 4 * 8 * big.size  # stored copy + float64 work copies
    monkeypatch.setattr(matrices, "available_memory", lambda: (need_small + need_big) // 2)
    from htsr import engine

    monkeypatch.setattr(engine, "available_memory", matrices.available_memory)
    report = htsr.analyze({"small.weight": small, "big.weight": big})
    assert list(report.details["name"]) == ["small"]
    reason = report.skipped.set_index("name").loc["big", "reason"]
    assert reason.startswith("needs about") and "GiB available" in reason


def test_a_huge_sparse_safetensors_layer_is_skipped_before_reading(tmp_path, monkeypatch):
    """A 6 GB (sparse) float64 layer inside the default gates: it is skipped when even the blocked
    route (htsr.blocked: the stored data plus three 15000² float64 buffers, ~11.5 GB) would not fit
    (the memory the OS reports is set to half of that here, whatever this machine has)."""
    from htsr import blocked, engine

    rows, cols = 15000, 50000
    need = blocked.gram_bytes((rows, cols), 8) if blocked.uses_blocks((rows, cols)) else matrices.work_bytes((rows, cols), 8)
    monkeypatch.setattr(matrices, "available_memory", lambda: need // 2)
    monkeypatch.setattr(engine, "available_memory", matrices.available_memory)
    head = json.dumps({"big.weight": {"dtype": "F64", "shape": [rows, cols], "data_offsets": [0, rows * cols * 8]},
                       "ok.weight": {"dtype": "F64", "shape": [30, 20],
                                     "data_offsets": [rows * cols * 8, rows * cols * 8 + 4800]}}).encode()
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)) + head)
        fh.truncate(8 + len(head) + rows * cols * 8 + 4800)  # a hole: no disk used
    d = htsr.describe(path).set_index("name")
    assert not d.loc["big", "analyzed"] and d.loc["big", "reason"].startswith("needs about")
    assert d.loc["ok", "analyzed"]


