"""Conformance suite: every source of the same tiny model gives the same numbers and follows the id rules.

Sources: ``nn.Module``, state dict (torch tensors), dict of numpy arrays, ``.safetensors``, a sharded
Hugging Face folder with ``model.safetensors.index.json``, ``.npz``, ``.bin`` / ``.pt`` / ``.pth``.
Rules (core issue, item 2): key-value sources follow the index order when there is one, else the
natural sort of the keys; ``layer_id`` counts every ``.weight`` key from 1, continuing across shards;
``name`` = ``longname`` = the key without ``.weight``; tied weights are analyzed once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import htsr

torch = pytest.importorskip("torch")
nn = torch.nn
safetensors_numpy = pytest.importorskip("safetensors.numpy")

NUMERIC = ["N", "M", "rf", "num_evals", "alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes", "norm", "log_norm",
           "spectral_norm", "alpha_weighted", "log_alpha_norm", "stable_rank", "matrix_rank", "rank_loss",
           "weak_rank_loss", "entropy", "sv_max", "sv_min"]


class Tiny(nn.Module):
    """Embedding, 12 Linear layers (so that layers.2 < layers.10 matters), a LayerNorm, a Conv2d, a head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(60, 24)
        self.layers = nn.ModuleList([nn.Linear(24, 24 + 2 * i) if i == 0 else nn.Linear(24 + 2 * (i - 1), 24 + 2 * i)
                                     for i in range(12)])
        self.norm = nn.LayerNorm(46)
        self.conv = nn.Conv2d(12, 16, 3)
        self.head = nn.Linear(46, 30)


def make_tiny(seed: int = 0) -> nn.Module:
    """A Tiny whose every parameter comes from an explicit numpy generator."""
    rng = np.random.default_rng(seed)
    model = Tiny().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32)))
    return model


@pytest.fixture(scope="module")
def model():
    return make_tiny()


@pytest.fixture(scope="module")
def arrays(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory, model, arrays):
    """Every file form of the tiny model."""
    d = tmp_path_factory.mktemp("tiny")
    out = {}
    out["safetensors"] = d / "model.safetensors"
    safetensors_numpy.save_file(arrays, str(out["safetensors"]))
    out["npz"] = d / "model.npz"
    np.savez(out["npz"], **arrays)
    for ext in ("bin", "pt", "pth"):
        out[ext] = d / f"model.{ext}"
        torch.save(model.state_dict(), out[ext])
    out["sharded"] = sharded_folder(d / "sharded", arrays, index_order=list(model.state_dict()))
    return out


def sharded_folder(folder, arrays, index_order):
    """An HF folder: two shards and an index listing ``index_order``."""
    folder.mkdir()
    half = len(index_order) // 2
    shards = {"model-00001-of-00002.safetensors": index_order[:half],
              "model-00002-of-00002.safetensors": index_order[half:]}
    weight_map = {}
    for fname, keys in shards.items():
        safetensors_numpy.save_file({k: arrays[k] for k in keys}, str(folder / fname))
        weight_map.update({k: fname for k in keys})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: weight_map[k] for k in index_order}}))
    return folder


def by_longname(report):
    return report.details.set_index("longname")


SOURCES = ["state_dict", "numpy", "safetensors", "sharded", "npz", "bin", "pt", "pth"]


def open_as(kind, model, arrays, files):
    if kind == "state_dict":
        return model.state_dict()
    if kind == "numpy":
        return arrays
    return files[kind]


@pytest.fixture(scope="module")
def module_report(model):
    return htsr.analyze(model)


@pytest.mark.parametrize("kind", SOURCES)
def test_every_source_gives_the_module_numbers(kind, model, arrays, files, module_report):
    report = htsr.analyze(open_as(kind, model, arrays, files))
    ref, got = by_longname(module_report), by_longname(report)
    assert sorted(got.index) == sorted(ref.index)
    assert len(ref) == 15  # embedding, 12 linear, conv, head; the 1-D norm weight is no layer
    for col in NUMERIC:
        np.testing.assert_allclose(got.loc[ref.index, col].to_numpy(float), ref[col].to_numpy(float),
                                   rtol=1e-12, atol=0, equal_nan=True, err_msg=f"{kind}: {col}")
    assert list(got.loc[ref.index, "layer_type"]) == list(ref["layer_type"])
    assert (got["status"] == "success").all()
    assert (got["name"] == got.index).all()  # name = longname = key without .weight


def natural_weight_keys(keys):
    return sorted((k for k in keys if k.endswith(".weight")), key=htsr.sources.natural_key)


@pytest.mark.parametrize("kind", ["state_dict", "numpy", "safetensors", "npz", "pt"])
def test_key_value_sources_follow_natural_order_and_count_weight_keys(kind, model, arrays, files):
    d = htsr.describe(open_as(kind, model, arrays, files))
    expected = [k[: -len(".weight")] for k in natural_weight_keys(arrays)]
    assert list(d["longname"]) == expected
    assert list(d["layer_id"]) == list(range(1, len(expected) + 1))  # the 1-D norm.weight counts too
    names = list(d["name"])
    assert names.index("layers.2") < names.index("layers.10")
    assert not d.loc[d["name"] == "norm", "analyzed"].item()


def test_sharded_folder_follows_the_index_and_ids_continue_across_shards(tmp_path, arrays):
    order = list(reversed(list(arrays)))  # an index order unlike the natural sort
    folder = sharded_folder(tmp_path / "rev", arrays, index_order=order)
    d = htsr.describe(folder)
    weights = [k for k in order if k.endswith(".weight")]
    assert list(d["longname"]) == [k[: -len(".weight")] for k in weights]
    assert list(d["layer_id"]) == list(range(1, len(weights) + 1))
    first_shard_weights = [k for k in order[: len(order) // 2] if k.endswith(".weight")]
    second = weights[len(first_shard_weights)][: -len(".weight")]
    assert d.set_index("longname").loc[second, "layer_id"] == len(first_shard_weights) + 1
    assert 0 < len(first_shard_weights) < len(weights)


def test_folder_without_index_is_naturally_sorted_across_files(tmp_path, arrays):
    keys = natural_weight_keys(arrays)
    folder = tmp_path / "noindex"
    folder.mkdir()
    safetensors_numpy.save_file({k: arrays[k] for k in keys[::2]}, str(folder / "b.safetensors"))
    safetensors_numpy.save_file({k: arrays[k] for k in keys[1::2]}, str(folder / "a.safetensors"))
    d = htsr.describe(folder)
    assert list(d["longname"]) == [k[: -len(".weight")] for k in keys]
    assert list(d["layer_id"]) == list(range(1, len(keys) + 1))


def test_module_ids_are_module_indices(model):
    d = htsr.describe(model)
    index = {name: i for i, (name, _) in enumerate(model.named_modules())}
    assert all(index[n] == i for n, i in zip(d["longname"], d["layer_id"]))
    assert d.set_index("longname").loc["layers.3", "name"] == "3"


def test_bf16_read_without_torch_equals_torch_conversion(tmp_path):
    storch = pytest.importorskip("safetensors.torch")
    rng = np.random.default_rng(3)
    t = torch.from_numpy(rng.standard_normal((40, 30)).astype(np.float32) * 10).to(torch.bfloat16)
    special = torch.tensor([0.0, -0.0, 1e-40, 3.0e38, -2.5], dtype=torch.float32).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    storch.save_file({"w.weight": t, "s.weight": special.reshape(1, 5)}, str(path))
    got = {w.key: w.load() for w in htsr.sources.open_source(path).tensors}
    for key, ref in (("w.weight", t), ("s.weight", special.reshape(1, 5))):
        want = ref.to(torch.float32).numpy()
        assert got[key].dtype == np.float32
        assert got[key].tobytes() == want.tobytes(), key  # bit for bit
    assert htsr.describe(path).set_index("name").loc["w", "dtype"] == "bfloat16"


@pytest.mark.parametrize("tdtype, code", [("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")])
def test_float8_decoding_equals_torch_for_all_256_codes(tdtype, code):
    from htsr.sources.dtypes import fp8_to_float32

    codes = np.arange(256, dtype=np.uint8)
    want = torch.from_numpy(codes).view(getattr(torch, tdtype)).to(torch.float32).numpy()
    got = fp8_to_float32(codes, code)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert got[ok].tobytes() == want[ok].tobytes()


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 20)
        self.mid = nn.Linear(20, 20)
        self.lm_head = nn.Linear(20, 50, bias=False)
        self.lm_head.weight = self.embed.weight  # tied, as in GPT-2 and BERT


@pytest.mark.parametrize("form", ["module", "state_dict", "pt"])
def test_tied_weights_are_analyzed_once(form, tmp_path):
    model = Tied()
    with torch.no_grad():
        model.embed.weight.copy_(torch.from_numpy(np.random.default_rng(5).standard_normal((50, 20)).astype(np.float32)))
    obj = model if form == "module" else model.state_dict()
    if form == "pt":
        obj = tmp_path / "tied.pt"
        torch.save(model.state_dict(), obj)
    report = htsr.analyze(obj)
    assert list(report.details["longname"]) == ["embed", "mid"]
    skipped = report.skipped.set_index("longname")
    assert "tied" in skipped.loc["lm_head", "reason"] and "embed" in skipped.loc["lm_head", "reason"]


def test_views_of_the_same_numpy_array_are_tied_but_equal_copies_are_not():
    W = np.random.default_rng(1).standard_normal((30, 20))
    report = htsr.analyze({"a.weight": W, "b.weight": W, "c.weight": W.copy(), "d.weight": W.T})
    assert list(report.details["name"]) == ["a", "c", "d"]
    assert list(report.skipped["name"]) == ["b"]
