"""Keras 3 models in memory, ``.keras`` archives and legacy ``.h5`` files: the same rows, PyTorch's layouts.

Keras runs on its torch backend here (no TensorFlow on the machine); the files are read with h5py only.
"""

from __future__ import annotations

import os
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.errors import SourceError
from htsr.sources import open_source

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("h5py")
keras = pytest.importorskip("keras")


def knp(variable):
    """A Keras variable as numpy (torch backend; keras.ops.convert_to_numpy warns under numpy 2)."""
    return variable.value.detach().cpu().numpy()


def save(model, path, weights_only=False):
    """Keras' own writer: under numpy 2 its torch backend emits a DeprecationWarning (not htsr's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        (model.save_weights if weights_only else model.save)(path)


def seeded(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.standard_normal(tuple(w.shape)).astype("float32"))
    return model


def functional():
    inp = keras.Input((10, 8, 3))
    x = keras.layers.Conv2D(16, 3, name="c2")(inp)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(30, name="d1")(x)
    x = keras.layers.EinsumDense("ab,bc->ac", output_shape=48, bias_axes="c", name="ein")(x)
    x = keras.layers.Reshape((4, 12))(x)
    x = keras.layers.EinsumDense("abc,cde->abde", output_shape=(4, 4, 6), name="heads")(x)
    return seeded(keras.Model(inp, x, name="fun"))


def sequential():
    return seeded(keras.Sequential([keras.Input((12,)), keras.layers.Embedding(50, 16, name="emb"),
                                    keras.layers.Conv1D(24, 3, name="c1"), keras.layers.Dense(20, name="out")],
                                   name="seq"), seed=1)


def nested():
    inner = keras.Sequential([keras.Input((30,)), keras.layers.Dense(40, name="in1"), keras.layers.Dropout(0.1),
                              keras.layers.Dense(24, name="in2")], name="block")
    inp = keras.Input((20,))
    x = keras.layers.Dense(30, name="pre")(inp)
    x = keras.layers.Dense(16, name="post")(inner(x))
    return seeded(keras.Model(inp, x, name="nest"), seed=2)


@pytest.mark.parametrize("build", [functional, sequential, nested])
def test_model_keras_archive_and_legacy_h5_give_the_same_rows(tmp_path, build):
    model = build()
    save(model, tmp_path / "m.keras")
    save(model, tmp_path / "m.h5")  # the legacy format
    expected = htsr.analyze(model, seed=0).details
    assert expected["alpha"].notna().all()
    for name in ("m.keras", "m.h5"):
        pd.testing.assert_frame_equal(htsr.analyze(tmp_path / name, seed=0).details, expected, obj=name)
    if build is functional:  # InputLayer is layer 0; Flatten (2) and Reshape (5) hold no weights
        assert list(expected["layer_id"]) == [1, 3, 4, 6]
        assert list(expected["name"]) == ["c2", "d1", "ein", "heads"]
    elif build is sequential:
        assert list(expected["layer_id"]) == [0, 1, 2]
        assert list(expected["layer_type"]) == ["embedding", "conv1d", "dense"]
    else:  # a nested model's layers follow it (Dropout 4 holds no weights)
        assert list(zip(expected["layer_id"], expected["name"])) == [(1, "pre"), (3, "block/in1"), (5, "block/in2"),
                                                                     (6, "post")]


def test_kernels_come_in_pytorch_layout(tmp_path):
    model = functional()
    save(model, tmp_path / "m.keras")
    k = {lay.name: knp(lay.kernel) for lay in model.layers if hasattr(lay, "kernel")}
    got = {t.name: t.load() for t in open_source(tmp_path / "m.keras").tensors}
    np.testing.assert_array_equal(got["c2"], k["c2"].transpose(3, 2, 0, 1))  # (out, in, kh, kw)
    np.testing.assert_array_equal(got["d1"], k["d1"].T)
    np.testing.assert_array_equal(got["ein"], k["ein"].T)
    # "abc,cde->abde": c is contracted, d and e are outputs: (d·e, c)
    np.testing.assert_array_equal(got["heads"], k["heads"].transpose(1, 2, 0).reshape(24, 12))
    seq = sequential()
    got = {t.name: t.load() for t in open_source(seq).tensors}
    np.testing.assert_array_equal(got["c1"], knp(seq.layers[1].kernel).transpose(2, 1, 0))
    np.testing.assert_array_equal(got["emb"], knp(seq.layers[0].embeddings))


def test_bare_weights_file_uses_group_names(tmp_path):
    model = functional()
    save(model, tmp_path / "m.weights.h5", weights_only=True)
    rows = htsr.analyze(tmp_path / "m.weights.h5", seed=0).details
    expected = htsr.analyze(model, seed=0).details
    assert list(rows["name"]) == ["conv2d", "dense", "einsum_dense", "einsum_dense_1"]
    same = [c for c in expected.columns if c not in ("layer_id", "name", "longname")]
    pd.testing.assert_frame_equal(rows[same], expected[same])


def test_broken_keras_files_are_source_errors(tmp_path):
    model = sequential()
    save(model, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(tmp_path / "cut.keras", "w") as out:
        for n, b in members.items():
            out.writestr(n, b[: len(b) // 2] if n.endswith(".h5") else b)
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    for name in ("cut.keras", "junk.h5"):
        with pytest.raises(SourceError, match=name):
            htsr.analyze(tmp_path / name)


class _Block(keras.layers.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.conv = keras.layers.Conv2D(12, 3)
        self.dense = keras.layers.Dense(20)

    def call(self, x):
        return self.dense(self.conv(x))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.block1 = _Block()
        self.lstm = keras.layers.LSTM(16, return_sequences=True)
        self.gru = keras.layers.GRU(14)
        self.head = keras.layers.Dense(30)

    def call(self, x, s):
        return self.block1(x), self.head(self.gru(self.lstm(s)))


def test_a_subclassed_models_weights_h5_nested_groups_and_rnn_gates(tmp_path):
    """``.weights.h5`` of a subclassed model: variables under nested groups, named from their h5 paths."""
    model = _Subclassed()
    model(np.zeros((1, 8, 8, 6), "float32"), np.zeros((1, 4, 11), "float32"))
    seeded(model, 3)
    save(model, tmp_path / "sub.weights.h5", weights_only=True)
    rows = {t.name: t for t in open_source(tmp_path / "sub.weights.h5").tensors}
    np.testing.assert_array_equal(rows["block1/conv"].load(), knp(model.block1.conv.kernel).transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(rows["block1/dense"].load(), knp(model.block1.dense.kernel).T)
    np.testing.assert_array_equal(rows["head"].load(), knp(model.head.kernel).T)
    lstm = [n for n in rows if n.endswith("/kernel.f") and "lstm" in n]
    assert len(lstm) == 1
    prefix = lstm[0][: -len("/kernel.f")]
    k, r = knp(model.lstm.cell.kernel), knp(model.lstm.cell.recurrent_kernel)  # (11, 64), (16, 64): i, f, c, o
    for i, g in enumerate("ifco"):
        np.testing.assert_array_equal(rows[f"{prefix}/kernel.{g}"].load(), k.T[16 * i:16 * (i + 1)])
        np.testing.assert_array_equal(rows[f"{prefix}/recurrent_kernel.{g}"].load(), r.T[16 * i:16 * (i + 1)])
        assert rows[f"{prefix}/kernel.{g}"].extra
    k = knp(model.gru.cell.kernel)  # (16, 42): z, r, h
    for i, g in enumerate("zrh"):
        np.testing.assert_array_equal(rows[f"gru/kernel.{g}"].load(), k.T[14 * i:14 * (i + 1)])
    # GRU's 2-D bias (reset_after) is listed, not analyzed, not dropped (the census)
    assert rows["gru/cell/vars/2"].note.startswith("not a layer weight")
    # the same rows from the model in memory (names differ: Keras' layer names, not h5 paths)
    live = {t.name: t for t in open_source(model).tensors}
    assert sorted(t.shape for t in live.values()) == sorted(t.shape for t in rows.values() if not t.note)
    report = htsr.analyze(tmp_path / "sub.weights.h5")
    assert {"block1/conv", "gru/recurrent_kernel.h"} <= set(report.details["name"]) | set(report.skipped["name"])


def test_a_functional_lstm_reads_alike_from_memory_weights_h5_and_keras(tmp_path):
    inp = keras.Input((7, 10))
    model = keras.Model(inp, keras.layers.Dense(24, name="out")(keras.layers.LSTM(18, name="rnn")(inp)))
    seeded(model, 4)
    save(model, tmp_path / "m.keras")
    save(model, tmp_path / "m.weights.h5", weights_only=True)
    want = htsr.analyze(model, seed=0).details
    assert sum(want["name"].str.startswith("rnn/")) == 8 and want["alpha"].notna().all()
    got = htsr.analyze(tmp_path / "m.keras", seed=0).details  # the config names the layers
    pd.testing.assert_frame_equal(got, want)
    # a bare .weights.h5 has no config: rows are named from the h5 paths (layers/<class>), in the file's
    # (alphabetical) order; the same numbers
    got = htsr.analyze(tmp_path / "m.weights.h5", seed=0).details
    renamed = want.assign(name=[n.replace("rnn/", "lstm/").replace("out", "dense") for n in want["name"]])
    cols = [c for c in want.columns if c not in ("layer_id", "longname")]
    pd.testing.assert_frame_equal(got.sort_values("name")[cols].reset_index(drop=True),
                                  renamed.sort_values("name")[cols].reset_index(drop=True))
