"""Fine-tuning deltas (W − W_base) and LoRA adapter folders (ΔW = s·B·A, and W + ΔW with a base)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.errors import SourceError
from htsr.sources import open_lora, open_source
from htsr.sources.delta import adapter_weights, delta_source, lora_source

sn = pytest.importorskip("safetensors.numpy")


def arrays(seed, shapes):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


SHAPES = {"fc1.weight": (60, 40), "fc1.bias": (60,), "fc2.weight": (30, 60), "head.weight": (20, 30)}


def test_delta_is_the_difference_matched_by_key(tmp_path):
    base = arrays(0, SHAPES)
    tuned = {k: v + 0.1 * arrays(1, SHAPES)[k] for k, v in base.items()}
    tuned["extra.weight"] = arrays(2, {"x": (24, 24)})["x"]  # not in the base: listed as skipped
    sn.save_file(base, str(tmp_path / "base.safetensors"))
    src = delta_source(open_source(tuned), open_source(tmp_path / "base.safetensors"))
    got = {t.key: t for t in src.tensors}
    np.testing.assert_allclose(got["fc2.weight"].load(), tuned["fc2.weight"] - base["fc2.weight"], rtol=0, atol=0)
    report = htsr.analyze(src, seed=0)
    assert list(report.details["name"]) == ["fc1", "fc2", "head"]
    assert report.skipped.set_index("name").loc["extra", "reason"] == "no layer of the base model has key 'extra.weight'"
    assert list(report.details["layer_id"]) == [2, 3, 4]  # the fine-tuned model's ids ("extra" is 1)
    pd.testing.assert_frame_equal(htsr.analyze(tuned, base_model=tmp_path / "base.safetensors", seed=0).details,
                                  report.details)
    assert list(htsr.describe(tuned, base_model=tmp_path / "base.safetensors")["analyzed"]) == [False, True, True, True]
    expected = htsr.analyze({k: tuned[k] - base[k] for k in SHAPES}, seed=0).details
    pd.testing.assert_frame_equal(report.details.drop(columns="layer_id"), expected.drop(columns="layer_id"))


def write_adapter(folder, modules, r, alpha, seed=0, prefix="base_model.model.", extra=None):
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (out_dim, in_dim) in modules.items():
        tensors[f"{prefix}{name}.lora_A.weight"] = rng.standard_normal((r, in_dim)).astype(np.float32)
        tensors[f"{prefix}{name}.lora_B.weight"] = rng.standard_normal((out_dim, r)).astype(np.float32)
    folder.mkdir(exist_ok=True)
    sn.save_file(tensors, str(folder / "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(modules), **(extra or {})}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return tensors


def test_lora_folder_gives_scaled_updates_and_merged_weights(tmp_path):
    base = arrays(3, SHAPES)
    sn.save_file(base, str(tmp_path / "base.safetensors"))
    ad = tmp_path / "adapter"
    t = write_adapter(ad, {"fc1": (60, 40), "fc2": (30, 60)}, r=8, alpha=16)
    rows = open_source(ad).tensors  # a folder with adapter_config.json: the updates alone
    assert [x.name for x in rows] == ["fc1.lora_BA", "fc2.lora_BA"]
    ba = 2.0 * t["base_model.model.fc2.lora_B.weight"].astype(np.float64) @ t["base_model.model.fc2.lora_A.weight"]
    np.testing.assert_allclose(rows[1].load(), ba, rtol=1e-12)
    with_base = open_lora(ad, base=tmp_path / "base.safetensors")
    assert [x.name for x in with_base.tensors] == ["fc1.lora_BA", "fc1.lora_W_plus_AB", "fc2.lora_BA",
                                                   "fc2.lora_W_plus_AB"]
    np.testing.assert_allclose(with_base.tensors[3].load(), base["fc2.weight"] + ba, rtol=1e-6)
    report = htsr.analyze(with_base, seed=0)
    assert len(report.details) == 4
    # ΔW has rank r: the rank columns say so
    assert list(report.details["matrix_rank"])[::2] == [8, 8]


def test_rslora_rank_pattern_and_fan_in_fan_out(tmp_path):
    ad = tmp_path / "a"
    t = write_adapter(ad, {"h.0.attn": (30, 20), "h.1.attn": (30, 20)}, r=4, alpha=8,
                      extra={"use_rslora": True, "fan_in_fan_out": True, "rank_pattern": {"h.1.attn": 2}})
    rows = {x.name: x for x in open_source(ad).tensors}
    for i, r in ((0, 4), (1, 2)):
        a = t[f"base_model.model.h.{i}.attn.lora_A.weight"].astype(np.float64)
        b = t[f"base_model.model.h.{i}.attn.lora_B.weight"].astype(np.float64)
        np.testing.assert_allclose(rows[f"h.{i}.attn.lora_BA"].load(), (8 / np.sqrt(r)) * (b @ a).T, rtol=1e-12)
        assert rows[f"h.{i}.attn.lora_BA"].shape == (20, 30)


def test_broken_adapters_are_source_errors(tmp_path):
    ad = tmp_path / "a"
    t = write_adapter(ad, {"fc": (30, 20)}, r=4, alpha=4)
    del t["base_model.model.fc.lora_B.weight"]
    sn.save_file(t, str(ad / "adapter_model.safetensors"))
    with pytest.raises(SourceError, match="without its partner"):
        open_source(ad)
    (ad / "adapter_config.json").write_text("{not json")
    with pytest.raises(SourceError, match="adapter_config.json"):
        open_source(ad)


def test_lora_rows_match_peft_merge(tmp_path):
    """PEFT's own merge_and_unload gives W + ΔW: the adapter rows must equal the delta of the merged model."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 60), torch.nn.ReLU(), torch.nn.Linear(60, 30))
    base_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pm = peft.get_peft_model(model, peft.LoraConfig(r=6, lora_alpha=12, target_modules=["0", "2"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_()
    pm.save_pretrained(tmp_path / "adapter")
    merged = pm.merge_and_unload()
    ours = {t.name: t.load() for t in lora_source(tmp_path / "adapter", open_source(adapter_weights(tmp_path / "adapter")),
                                                     base=open_source(base_sd)).tensors}
    for i in ("0", "2"):
        np.testing.assert_allclose(ours[f"{i}.lora_W_plus_AB"], merged.state_dict()[f"{i}.weight"].numpy(), atol=1e-5)
        np.testing.assert_allclose(ours[f"{i}.lora_BA"], (merged.state_dict()[f"{i}.weight"] - base_sd[f"{i}.weight"]).numpy(),
                                   atol=1e-5)


try:  # the architecture of tests/data/make/make_delta_golden.py, at module level so that it pickles
    import torch as _torch
except ImportError:  # pragma: no cover - torch is a test dependency
    _torch = None
if _torch is not None:
    class GoldenNet(_torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = _torch.nn.Embedding(120, 48)
            self.fc1 = _torch.nn.Linear(48, 96)
            self.conv = _torch.nn.Conv2d(16, 24, 3)
            self.fc2 = _torch.nn.Linear(96, 64)


def test_base_model_matches_the_reference(tmp_path):
    """``WeightWatcher(model=tuned, base_model=base)``: golden rows from tests/data/make/make_delta_golden.py."""
    torch = pytest.importorskip("torch")
    from conftest import DATA
    from test_parity import assert_rows_match

    arrays = dict(np.load(DATA / "delta_weights.npz"))

    def model(which):
        net = GoldenNet()
        net.load_state_dict({k[len(which) + 1:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(which)})
        return net.eval()

    ref = pd.read_csv(DATA / "delta_ww077.csv", keep_default_na=False, na_values=[])
    tuned, base = model("tuned"), model("base")
    ours = htsr.WeightWatcher(model=tuned, base_model=base).analyze()
    assert list(ours["name"]) == list(ref["name"]) == ["embed", "fc1", "conv", "fc2"]
    assert_rows_match(ours, ref, skip=("warning",) if "warning" not in ours else ())
    # the same through analyze(base_model=) and from files
    pd.testing.assert_frame_equal(htsr.WeightWatcher(model=tuned).analyze(base_model=base), ours)
    torch.save(base.state_dict(), tmp_path / "base.pt")
    torch.save(tuned, tmp_path / "tuned.pt")
    from_files = htsr.WeightWatcher(model=str(tmp_path / "tuned.pt"), base_model=str(tmp_path / "base.pt")).analyze()
    # a model saved whole gives its state dict's rows (ids count .weight keys, natural key order): same numbers
    torch.save(tuned.state_dict(), tmp_path / "tuned_sd.pt")
    pd.testing.assert_frame_equal(
        from_files, htsr.WeightWatcher(model=str(tmp_path / "tuned_sd.pt"), base_model=str(tmp_path / "base.pt")).analyze())
    numbers = [c for c in ours.columns if c not in ("layer_id", "name", "longname")]
    by_name = from_files.set_index("name").loc[list(ours["name"]), numbers].reset_index(drop=True)
    pd.testing.assert_frame_equal(by_name, ours[numbers])


if _torch is not None:
    class LoraLinear(_torch.nn.Module):
        """PEFT's LoRA module layout in plain torch (as tests/data/make/make_peft_golden.py builds it)."""

        def __init__(self, n_in, n_out, r):
            super().__init__()
            self.base_layer = _torch.nn.Linear(n_in, n_out)
            self.lora_dropout = _torch.nn.ModuleDict({"default": _torch.nn.Identity()})
            self.lora_A = _torch.nn.ModuleDict({"default": _torch.nn.Linear(n_in, r, bias=False)})
            self.lora_B = _torch.nn.ModuleDict({"default": _torch.nn.Linear(r, n_out, bias=False)})


@pytest.mark.parametrize("peft", [True, "with_base"])
def test_peft_matches_the_reference(peft):
    """``analyze(peft=…)``: golden rows from tests/data/make/make_peft_golden.py (rank 24, no scaling, r eigenvalues)."""
    torch = pytest.importorskip("torch")
    from conftest import DATA
    from test_parity import assert_rows_match

    arrays = dict(np.load(DATA / "peft_weights.npz"))
    model = torch.nn.Sequential(LoraLinear(64, 96, 24), torch.nn.ReLU(), LoraLinear(96, 80, 24),
                                torch.nn.Linear(80, 40)).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    ref = pd.read_csv(DATA / f"peft_ww077_{'true' if peft is True else 'with_base'}.csv", keep_default_na=False,
                      na_values=[])
    ours = htsr.WeightWatcher(model=model).analyze(peft=peft)
    assert list(ours["longname"]) == list(ref["longname"])
    assert list(ours["num_evals"]) == list(ref["num_evals"])
    assert_rows_match(ours, ref)


def test_command_line_base(tmp_path):
    import io

    from htsr import cli

    base = arrays(3, SHAPES)
    tuned = {k: v + 0.1 * arrays(4, SHAPES)[k] for k, v in base.items()}
    sn.save_file(base, str(tmp_path / "base.safetensors"))
    sn.save_file(tuned, str(tmp_path / "tuned.safetensors"))
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["analyze", str(tmp_path / "tuned.safetensors"), "--base", str(tmp_path / "base.safetensors"),
                     "--format", "csv"], stdout=out, stderr=err) == 0, err.getvalue()
    table = pd.read_csv(io.StringIO(out.getvalue()))
    expected = htsr.analyze({k: tuned[k] - base[k] for k in SHAPES}, seed=0).details
    np.testing.assert_allclose(table["alpha"], expected["alpha"], rtol=1e-9)
    write_adapter(tmp_path / "adapter", {"fc1": (60, 40), "fc2": (30, 60)}, r=8, alpha=16)
    out = io.StringIO()
    assert cli.main(["describe", str(tmp_path / "adapter"), "--base", str(tmp_path / "base.safetensors"),
                     "--format", "csv"], stdout=out, stderr=err) == 0, err.getvalue()
    assert list(pd.read_csv(io.StringIO(out.getvalue()))["name"]) == ["fc1.lora_BA", "fc1.lora_W_plus_AB", "fc2.lora_BA",
                                                                     "fc2.lora_W_plus_AB"]
