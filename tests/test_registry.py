"""The reader registry: files recognized by content whatever their name; one model saved five ways, one table.

``htsr.sources.registry.READERS`` lists the readers in priority order; each one's ``sniff`` must say yes
to its own format's file and no to every other format's (a confusion matrix over the conformance
fixtures), and a file renamed to an unknown suffix must give the rows it gives under its own name.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.errors import SourceError
from htsr.sources import open_source
from htsr.sources.registry import READERS, read_head, reader_for

torch = pytest.importorskip("torch")
nn = torch.nn

from test_conformance import FILE_FORMATS, FORMATS, small  # noqa: E402

# the reader each conformance file must reach by content
READER_OF = {"safetensors": "safetensors", "npz": "npz", "pt-state-dict": "torch zip", "pt-whole-model": "torch zip",
             "pt-checkpoint": "torch zip", "pt-legacy-whole-model": "torch legacy", "torchscript": "torch zip",
             "onnx-file": "ONNX", "gguf": "GGUF", "flax-msgpack": "Flax msgpack", "keras-archive": "Keras archive",
             "keras-legacy-h5": "HDF5"}


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_every_file_is_recognized_by_its_content_under_any_name(fmt, tmp_path):
    path = FORMATS[fmt](small(), tmp_path)
    head = read_head(path)
    said_yes = [r.name for r in READERS if r.recognizes(path, head)]
    assert said_yes and said_yes[0].startswith(READER_OF[fmt]), said_yes  # the first that says yes reads it
    assert reader_for(path).name.startswith(READER_OF[fmt])
    want = htsr.describe(path)
    for new_name in ("renamed.weights", "no_suffix", "model.jit"):
        other = tmp_path / new_name
        shutil.copyfile(path, other)
        got = htsr.describe(other)
        pd.testing.assert_frame_equal(got, want, obj=f"{fmt} as {new_name}")


def test_only_the_priority_decides_between_readers_that_both_say_yes(tmp_path):
    """A .pt zip of .npy members would pass as npz too: torch's data.pkl is checked first, npz only without it."""
    with open(tmp_path / "arrays.pt", "wb") as fh:  # np.savez would append .npz to the name
        np.savez(fh, w=np.ones((12, 12), np.float32))
    assert reader_for(tmp_path / "arrays.pt").name == "npz"
    torch.save({"w.weight": torch.ones(12, 12)}, tmp_path / "real.npz")
    assert reader_for(tmp_path / "real.npz").name.startswith("torch zip")
    assert [t.name for t in open_source(tmp_path / "real.npz").tensors] == ["w"]


@pytest.mark.parametrize("content", [b"", b"hello world, not weights\n" * 4, bytes(range(256)) * 4,
                                     b"PK\x03\x04" + b"\x00" * 60, b"\x08\x07\x12" + b"\xff" * 40])
def test_unknown_content_with_an_unknown_suffix_is_one_line_naming_the_file(content, tmp_path):
    path = tmp_path / "mystery.dat"
    path.write_bytes(content)
    with pytest.raises(SourceError) as err:
        open_source(path)
    message = str(err.value)
    assert "mystery.dat" in message and "\n" not in message
    assert "unknown file type" in message or "not a readable ONNX model" in message  # a protobuf-looking head


def test_a_damaged_file_with_a_known_suffix_gets_its_readers_message(tmp_path):
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(SourceError, match="cut.safetensors: .*safetensors"):
        open_source(tmp_path / "cut.safetensors")


# ---------------------------------------------------------------- one model, five ways, one table


class Five(nn.Module):
    """An LSTM between a conv and an MLP, and a buffer that is not a parameter."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3)
        self.lstm = nn.LSTM(16, 24)
        self.fc1 = nn.Linear(24, 32)
        self.fc2 = nn.Linear(32, 12)
        self.register_buffer("pe", torch.randn(5, 12))

    def forward(self, x):
        h = self.conv(x).permute(2, 0, 1)
        out, _ = self.lstm(h)
        return self.fc2(torch.relu(self.fc1(out[-1]))) + self.pe[:1]


def five_ways(tmp_path):
    torch.manual_seed(0)
    model = Five().eval()
    example = torch.randn(2, 8, 9)
    paths = {"state dict": tmp_path / "sd.pt", "torch.save(model)": tmp_path / "model.pt",
             "TorchScript": tmp_path / "script.pt", "safetensors": tmp_path / "m.safetensors"}
    torch.save(model.state_dict(), paths["state dict"])
    torch.save(model, paths["torch.save(model)"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's and the ONNX exporter's deprecation notices
        torch.jit.save(torch.jit.trace(model, example), paths["TorchScript"])
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths["safetensors"]))
        if pytest.importorskip("onnx"):
            paths["ONNX"] = tmp_path / "m.onnx"
            torch.onnx.export(model, (example,), str(paths["ONNX"]), dynamo=False)
    return model, paths


def test_one_model_saved_five_ways_gives_one_table(tmp_path):
    model, paths = five_ways(tmp_path)
    reports = {way: htsr.analyze(path, seed=0) for way, path in paths.items()}
    want = reports["state dict"]
    details = want.details
    # conv, fc1, fc2 by the state dict's count of .weight keys; then the LSTM's 16 gate rows (ih and hh, i f g o)
    assert list(details["name"][:3]) == ["conv", "fc1", "fc2"] and list(details["layer_id"][:3]) == [1, 2, 3]
    assert len(details) == 3 + 8 and details["alpha"].notna().all()
    assert set(details["longname"][3:]) == {f"lstm.weight_{m}_l0.{g}" for m in ("ih", "hh") for g in "ifgo"}
    ih = model.lstm.weight_ih_l0.detach().numpy()
    gate = {t.longname: t for t in open_source(paths["TorchScript"]).tensors}["lstm.weight_ih_l0.g"]
    np.testing.assert_array_equal(gate.load(), ih[48:72])
    # the buffer: not a parameter, its key does not end in .weight: listed as skipped, the same in every format
    assert list(want.skipped.query("name == 'pe'")["reason"]) == ["not a layer weight: its key does not end in "
                                                                  ".weight (a buffer or a free parameter)"]
    for way in ("torch.save(model)", "TorchScript", "safetensors"):
        pd.testing.assert_frame_equal(reports[way].details, details, obj=way)
        pd.testing.assert_frame_equal(reports[way].skipped, want.skipped, obj=way)
    if "ONNX" in reports:
        onnx_rows = reports["ONNX"].details
        # ONNX gives conv, fc1, fc2 under the same names, ids and numbers; its LSTM op's W and R are r17c's
        pd.testing.assert_frame_equal(onnx_rows.iloc[:3].reset_index(drop=True), details.iloc[:3], obj="ONNX")
        pd.testing.assert_frame_equal(onnx_rows, details, obj="ONNX")
