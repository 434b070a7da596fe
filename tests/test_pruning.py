"""htsr.pruning: AlphaPruning's allocation on hand-computed cases, prune() on dicts, modules and files, the CLI."""

from __future__ import annotations

import io
import json
import struct
from fractions import Fraction

import numpy as np
import pytest

import htsr
from htsr import cli
from htsr.errors import HtsrError, OptionError
from htsr.pruning import allocate, block_groups, magnitude_mask, wanda_mask


# ---------------------------------------------------------------- allocate
def test_allocate_linear_map_and_scale_by_hand():
    # scores 0.5, 1, 1.5 (weighted mean 1) -> times 0.5
    assert allocate([1, 2, 3], [1, 1, 1], 0.5, epsilon=0.5) == pytest.approx([0.25, 0.5, 0.75], abs=1e-15)
    # unequal sizes: scores 0.5, 1.5; sum(score*size) = 5, total 4 -> factor 0.5*4/5 = 0.4
    r = allocate([1, 3], [1, 3], 0.5, epsilon=0.5)
    assert r == pytest.approx([0.2, 0.6], abs=1e-15)
    assert (r * [1, 3]).sum() / 4 == pytest.approx(0.5, abs=1e-15)


def test_allocate_groups_of_unequal_sizes_by_hand():
    # group means: a = (1+3)/2 = 2, b = (5+2)/2 = 3.5, c = 2.75 -> scores 0.8, 1.2, 1.0 (eps 0.2)
    # sum(score*size) = 0.8*3 + 1.2*7 + 1.0*10 = 20.8; factor = 0.4*20/20.8 = 5/13
    sizes = [1, 2, 3, 4, 10]
    r = allocate([1, 3, 5, 2, 2.75], sizes, 0.4, epsilon=0.2, groups=["a", "a", "b", "b", "c"])
    want = [Fraction(4, 13)] * 2 + [Fraction(6, 13)] * 2 + [Fraction(5, 13)]
    assert r == pytest.approx([float(x) for x in want], abs=1e-15)
    assert float((r * sizes).sum() / sum(sizes)) == pytest.approx(0.4, abs=1e-15)


def test_allocate_direction_equal_metrics_and_zero_epsilon():
    r = allocate([6.0, 2.0, 4.0], [10, 20, 30], 0.7)
    assert r[0] > r[2] > r[1]  # higher alpha (less well trained) -> pruned more
    assert allocate([3.0, 3.0, 3.0], [1, 5, 9], 0.6) == pytest.approx([0.6] * 3, abs=1e-15)
    assert allocate([1.0, 9.0], [1, 5], 0.6, epsilon=0.0) == pytest.approx([0.6, 0.6], abs=1e-15)


def test_allocate_ratio_above_one_names_the_layer_and_suggests_smaller_epsilon():
    # scores 0.5, 1.5; factor 0.9*1001/501.5 = 1.796 -> layer b at 2.69
    with pytest.raises(HtsrError, match=r"^b: its sparsity would be 2\.69.*smaller epsilon"):
        allocate([1, 2], [1000, 1], 0.9, epsilon=0.5, names=["a", "b"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(metric=[1, 2], sizes=[1, 1], sparsity=0.0), "strictly between 0 and 1"),
    (dict(metric=[1, 2], sizes=[1, 1], sparsity=1.0), "strictly between 0 and 1"),
    (dict(metric=[1, 2], sizes=[1, 1], sparsity=0.5, epsilon=1.0), "epsilon"),
    (dict(metric=[1, float("nan")], sizes=[1, 1], sparsity=0.5), "layer 1: its metric is nan"),
    (dict(metric=[1, 2], sizes=[1, 0], sparsity=0.5), "layer 1: its size"),
    (dict(metric=[1, 2], sizes=[1], sparsity=0.5), "one entry per layer"),
])
def test_allocate_bad_input(kwargs, match):
    with pytest.raises(OptionError, match=match):
        allocate(**kwargs)


def test_block_groups_find_blocks_from_names():
    names = ["model.layers.10.mlp.up", "model.layers.10.attn.q", "encoder.layer.2.output.dense",
             "transformer.h.0.attn.c_attn", "blocks.3.fc", "lm_head", "hidden.5.fc"]
    assert block_groups(names) == ["model.layers.10", "model.layers.10", "encoder.layer.2", "transformer.h.0",
                                   "blocks.3", "lm_head", "hidden.5.fc"]


# ---------------------------------------------------------------- masks
def test_magnitude_and_wanda_masks_by_hand():
    w = np.array([[0.1, -3.0, 0.2, 4.0], [1.0, 2.0, -0.5, 0.05]])
    assert magnitude_mask(w, 0.5).tolist() == [[True, False, True, False], [False, False, True, True]]
    # Wanda: |w| * ||x_j||, norms (10, 1, 1, 0.01): row 0 -> 1, 3, 0.2, 0.04; row 1 -> 10, 2, 0.5, 0.0005
    mask = wanda_mask(w, np.array([10.0, 1.0, 1.0, 0.01]), 0.5)
    assert mask.tolist() == [[False, False, True, True], [False, False, True, True]]
    assert mask.sum(1).tolist() == [2, 2]  # the same count in every output row


# ---------------------------------------------------------------- prune
def _state(seed=0):
    rng = np.random.default_rng(seed)
    sd = {}
    for i, scale in enumerate((1.0, 1.0, 1.0)):
        sd[f"layers.{i}.a.weight"] = rng.standard_normal((80, 40)) * scale
        sd[f"layers.{i}.b.weight"] = rng.standard_normal((40, 80)) @ np.diag(np.linspace(0.1, 3, 80)) ** (i + 1)
        sd[f"layers.{i}.a.bias"] = rng.standard_normal(80)
    return sd


def test_prune_dict_alpha_allocation_table_and_input_untouched():
    sd = _state()
    before = {k: v.copy() for k, v in sd.items()}
    pruned, table = htsr.prune(sd, 0.6, groups=None)
    assert all(np.array_equal(sd[k], before[k]) for k in sd)  # input never modified
    assert list(table.columns) == ["name", "alpha", "target", "sparsity", "params"]
    assert sorted(table["name"]) == sorted(k[:-7] for k in sd if k.endswith(".weight"))
    r = allocate(table["alpha"], table["params"], 0.6, groups=None)
    assert table["target"].to_numpy() == pytest.approx(r, abs=1e-12)
    assert float((table["sparsity"] * table["params"]).sum() / table["params"].sum()) == pytest.approx(0.6, abs=1e-3)
    for row in table.itertuples():
        w = pruned[row.name + ".weight"]
        assert (w == 0).mean() == pytest.approx(row.target, abs=1 / w.size)
        kept = np.abs(before[row.name + ".weight"])[w != 0]
        assert kept.min() >= np.abs(before[row.name + ".weight"])[w == 0].max()  # the smallest |w| went
    assert np.array_equal(pruned["layers.0.a.bias"], sd["layers.0.a.bias"])


def test_prune_uniform_block_groups_and_explicit_dict():
    sd = _state(1)
    _, uni = htsr.prune(sd, 0.5, allocation="uniform")
    assert uni["target"].tolist() == [0.5] * 6
    _, blk = htsr.prune(sd, 0.5, groups="block", epsilon=0.2)
    by_block = blk.groupby(blk["name"].str[:8])["target"].nunique()
    assert by_block.tolist() == [1, 1, 1]  # one ratio per block
    pruned, tab = htsr.prune(sd, 0.5, allocation={"layers.1.a": 0.25})
    assert tab.set_index("name")["sparsity"].to_dict()["layers.1.a"] == 0.25
    assert np.array_equal(pruned["layers.0.a.weight"], sd["layers.0.a.weight"])


def test_prune_torch_module_magnitude_and_wanda():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 60), torch.nn.ReLU(), torch.nn.Linear(60, 30))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, table = htsr.prune(model, 0.5, allocation="uniform")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert pruned is not model and table["sparsity"].tolist() == [0.5, 0.5]
    x = torch.randn(64, 40) * torch.linspace(0.01, 5, 40)
    pw, tw = htsr.prune(model, 0.5, allocation="uniform", method="wanda", calibration=[x[:32], x[32:]])
    w0 = model[0].weight.detach().double().numpy()
    expect = wanda_mask(w0, np.sqrt((x.double() ** 2).sum(0).numpy()), 0.5)
    assert np.array_equal(pw[0].weight.detach().numpy() == 0, expect)
    assert ((pw[2].weight == 0).sum(1) == 30).all()  # per output row: 30 of 60 inputs
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_prune_bad_input_changes_nothing(tmp_path):
    sd = _state()
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(OptionError, match="strictly between 0 and 1"):
            htsr.prune(sd, bad)
    with pytest.raises(OptionError, match="not pruned here: nope"):
        htsr.prune(sd, 0.5, allocation={"nope": 0.5})
    with pytest.raises(HtsrError, match="no 2-D"):
        htsr.prune({"norm.weight": np.ones(10)}, 0.5)
    with pytest.raises(HtsrError, match="no analyzable layer"):  # too small for a spectrum
        htsr.prune({"tiny.weight": np.ones((4, 3))}, 0.5)
    with pytest.raises(HtsrError, match="no analyzable layer of the pruned types"):
        htsr.prune(sd, 0.5, layer_types=("conv2d",))
    with pytest.raises(OptionError, match="wanda"):
        htsr.prune(sd, 0.5, method="wanda")


def _write_safetensors(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (code, arr) in tensors.items():
        raw = arr.tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_cli_prune_writes_safetensors_keeping_other_bytes(tmp_path):
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((64, 32)).astype(np.float32)
    w2 = rng.standard_normal((32, 64)).astype(np.float32)
    bf = (rng.standard_normal((48, 32)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    src = tmp_path / "in.safetensors"
    _write_safetensors(src, {"layers.0.fc.weight": ("F32", w1), "layers.0.fc.bias": ("F32", w1[0]),
                             "layers.1.fc.weight": ("F32", w2), "layers.2.fc.weight": ("BF16", bf),
                             "ids": ("I64", np.arange(5))})
    data = src.read_bytes()
    out = tmp_path / "out.safetensors"
    so, se = io.StringIO(), io.StringIO()
    assert cli.main(["prune", str(src), str(out), "--sparsity", "0.5"], stdout=so, stderr=se) == 0, se.getvalue()
    assert src.read_bytes() == data
    new = out.read_bytes()
    assert len(new) == len(data)
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    assert new[:8 + n] == data[:8 + n]  # header byte-identical
    pruned = {"layers.0.fc.weight", "layers.1.fc.weight", "layers.2.fc.weight"}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        b0, b1 = (8 + n + x for x in info["data_offsets"])
        if key in pruned:
            zeros = np.frombuffer(new[b0:b1], dtype=np.uint8).reshape(int(np.prod(info["shape"])), -1).any(1)
            assert 0.3 < 1 - zeros.mean() < 0.7
        else:
            assert new[b0:b1] == data[b0:b1]
    text = so.getvalue()
    assert "layers.2.fc" in text and "sparsity" in text and "wrote" in text
    got = np.frombuffer(new[8 + n + header["layers.0.fc.weight"]["data_offsets"][0]:][:w1.nbytes], np.float32)
    assert np.array_equal(got.reshape(w1.shape) != 0, w1 * (got.reshape(w1.shape) != 0) != 0)


def test_cli_prune_bad_input_writes_nothing(tmp_path):
    rng = np.random.default_rng(4)
    src = tmp_path / "in.safetensors"
    _write_safetensors(src, {"fc.weight": ("F32", rng.standard_normal((64, 32)).astype(np.float32))})
    data = src.read_bytes()
    out = tmp_path / "out.safetensors"
    for argv, code, msg in [
        (["prune", str(src), str(src), "--sparsity", "0.5"], 2, "OUT is the input"),
        (["prune", str(src), str(out), "--sparsity", "1.2"], 2, "strictly between 0 and 1"),
        (["prune", str(tmp_path / "missing.safetensors"), str(out), "--sparsity", "0.5"], 1, "no such file"),
    ]:
        se = io.StringIO()
        assert cli.main(argv, stdout=io.StringIO(), stderr=se) == code
        assert msg in se.getvalue() and se.getvalue().count("\n") == 1
    assert src.read_bytes() == data and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]
