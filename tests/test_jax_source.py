"""JAX/Flax parameter pytrees and Flax msgpack checkpoints (written here with Flax's encoding; no Flax needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.errors import SourceError
from htsr.sources import open_source
from htsr.sources.dtypes import bf16_to_float32

msgpack = pytest.importorskip("msgpack")


def flax_bytes(tree, chunk_over: int | None = None) -> bytes:
    """Flax's msgpack encoding, written from its documented layout: ext 1 = msgpack((shape, dtype, bytes))."""

    def default(obj):
        if isinstance(obj, np.ndarray):
            payload = msgpack.packb((obj.shape, "bfloat16" if obj.dtype == np.uint16 else obj.dtype.name,
                                     obj.tobytes("C")), use_bin_type=True)
            return msgpack.ExtType(1, payload)
        raise TypeError(type(obj))

    def chunk(t):
        if isinstance(t, dict):
            return {k: chunk(v) for k, v in t.items()}
        if chunk_over is not None and isinstance(t, np.ndarray) and t.size > chunk_over:
            flat = t.reshape(-1)
            pieces = [flat[i:i + chunk_over] for i in range(0, flat.size, chunk_over)]
            return {"__msgpack_chunked_array__": True, "shape": {str(i): s for i, s in enumerate(t.shape)},
                    "chunks": {str(i): p for i, p in enumerate(pieces)}}
        return t

    return msgpack.packb(chunk(tree), default=default, use_bin_type=True)


def params(seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    return {"params": {
        "Embed_0": {"embedding": f(50, 24)},
        "Conv_0": {"kernel": f(3, 3, 8, 16), "bias": f(16)},
        "conv1d_block": {"kernel": f(2, 6, 20)},
        "Dense_0": {"kernel": f(24, 30), "bias": f(30)},
        "Dense_10": {"kernel": f(30, 12)},
        "attn": {"query": {"kernel": f(24, 4, 6)}, "out": {"kernel": f(4, 6, 24)}},
    }}


def torch_layout(p):
    q = p["params"]
    return {"Conv_0.weight": q["Conv_0"]["kernel"].transpose(3, 2, 0, 1),
            "Dense_0.weight": q["Dense_0"]["kernel"].T, "Dense_10.weight": q["Dense_10"]["kernel"].T,
            "Embed_0.weight": q["Embed_0"]["embedding"],
            "attn.out.weight": q["attn"]["out"]["kernel"].reshape(24, 24).T,
            "attn.query.weight": q["attn"]["query"]["kernel"].reshape(24, 24).T,
            "conv1d_block.weight": q["conv1d_block"]["kernel"].transpose(2, 1, 0)}


def test_pytree_and_msgpack_give_the_torch_layout_rows(tmp_path):
    p = params()
    path = tmp_path / "ckpt.msgpack"
    path.write_bytes(flax_bytes(p))
    expected = torch_layout(p)
    for src in (p, path):
        tensors = open_source(src).tensors
        assert [t.name for t in tensors] == ["Conv_0", "Dense_0", "Dense_10", "Embed_0", "attn.out", "attn.query",
                                             "conv1d_block"]
        assert [t.layer_type.value for t in tensors] == ["conv2d", "dense", "dense", "embedding", "dense", "dense",
                                                         "conv1d"]
        for t in tensors:
            np.testing.assert_array_equal(t.load(), expected[t.name + ".weight"])
            assert t.shape == expected[t.name + ".weight"].shape
    rows = htsr.analyze(path, seed=0).details
    pd.testing.assert_frame_equal(rows, htsr.analyze(p, seed=0).details)
    ref = htsr.analyze({k: np.ascontiguousarray(v) for k, v in expected.items()}, seed=0).details
    same = [c for c in ref.columns if c not in ("layer_type",)]
    pd.testing.assert_frame_equal(rows[same], ref[same])


def test_chunked_arrays_and_bfloat16_are_decoded(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((40, 30)).astype(np.float32)
    bf = (w.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16 bits (truncated)
    path = tmp_path / "c.msgpack"
    path.write_bytes(flax_bytes({"params": {"big": {"kernel": w}, "half": {"kernel": bf}}}, chunk_over=500))
    got = {t.name: t for t in open_source(path).tensors}
    np.testing.assert_array_equal(got["big"].load(), w.T)
    assert got["half"].dtype == "bfloat16"
    np.testing.assert_array_equal(got["half"].load(), bf16_to_float32(bf).T)


def test_flax_serialization_when_installed(tmp_path):
    serialization = pytest.importorskip("flax.serialization")
    p = params()
    path = tmp_path / "flax.msgpack"
    path.write_bytes(serialization.to_bytes(p))
    for t in open_source(path).tensors:
        np.testing.assert_array_equal(t.load(), torch_layout(p)[t.name + ".weight"])


def test_lying_msgpack_is_a_source_error(tmp_path):
    good = flax_bytes(params())
    bad_shape = msgpack.packb({"p": {"kernel": msgpack.ExtType(1, msgpack.packb(((10**9, 10**9), "float32", b"\0" * 16)))}})
    cases = {"cut.msgpack": good[: len(good) // 2], "shape.msgpack": bad_shape,
             "list.msgpack": msgpack.packb([1, 2, 3]), "empty.msgpack": msgpack.packb({"a": {"b": 1}})}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError, match=name):
            htsr.analyze(tmp_path / name)


def test_the_same_array_twice_is_analyzed_once():
    p = params()
    p["params"]["lm_head"] = {"kernel": p["params"]["Dense_0"]["kernel"]}  # tied: one object, two paths
    report = htsr.analyze(p, seed=0)
    assert "lm_head" not in set(report.details["name"])
    assert report.skipped.set_index("name").loc["lm_head", "reason"] == "tied: same tensor as Dense_0"
