"""Whole pickled models, TorchScript archives and checkpoint dicts read without running any code.

``torch.save(model)`` files are unpickled with stand-ins only (``htsr.sources.torch_pickle``): the rows must
equal the live module's, a custom class must not need to be importable, and a ``__reduce__`` payload must
never run.
"""

from __future__ import annotations

import json
import sys
import types
import warnings

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.errors import SourceError, UnsafeFileError
from htsr.sources import open_source

torch = pytest.importorskip("torch")
nn = torch.nn


def seeded(model, seed=0):
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32)))
    return model.eval()


def small_model():
    return seeded(nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.Conv1d(6, 20, 2),
                                nn.Embedding(50, 24), nn.Sequential(nn.Linear(24, 24), nn.LayerNorm(24))))


def details(obj):
    return htsr.analyze(obj, seed=0).details


def marker_writer(path):  # would leave a file behind if it were ever called
    with open(path, "w") as fh:
        fh.write("ran")
    return 0


class MarkerPayload:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (marker_writer, (self.target,))


def same_rows_as_state_dict(got, model, obj=""):
    """A model saved whole gives its state dict's rows: ids, names, numbers (the type from the class)."""
    want = details(model.state_dict())
    cols = [c for c in want.columns if c != "layer_type"]
    pd.testing.assert_frame_equal(got[cols], want[cols], obj=obj)


def test_whole_model_torchscript_and_checkpoints_give_the_state_dict_rows(tmp_path):
    model = small_model()
    expected = details(model)
    assert list(expected["layer_id"]) == [1, 3, 4, 5, 7] and expected["alpha"].notna().all()
    files = {"model.pt": model, "ckpt.pth": {"model": model, "epoch": 3, "opt": {"lr": 0.1}}}
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; users still hold such files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), tmp_path / "script.pt")
    for name in ("model.pt", "ckpt.pth", "script.pt"):
        before = (tmp_path / name).read_bytes()
        got = details(tmp_path / name)
        assert list(got["layer_id"]) == [1, 2, 3, 4, 5], name  # as the state dict numbers them, not 1, 3, 4 …
        assert list(got["layer_type"]) == list(expected["layer_type"]), name  # from the module classes
        same_rows_as_state_dict(got, model, name)
        np.testing.assert_array_equal(got["alpha"].to_numpy(), expected["alpha"].to_numpy())
        assert (tmp_path / name).read_bytes() == before
    # a state dict, plain or under "state_dict": the key-value rows, same numbers
    torch.save({"state_dict": model.state_dict(), "step": 7}, tmp_path / "sd.ckpt")
    sd_rows = details(tmp_path / "sd.ckpt")
    assert list(sd_rows["layer_id"]) == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(sd_rows["alpha"].to_numpy(), expected["alpha"].to_numpy())
    pd.testing.assert_frame_equal(sd_rows, details(model.state_dict()))


def test_a_custom_class_that_cannot_be_imported_is_still_read(tmp_path, monkeypatch):
    fake = types.ModuleType("htsr_gone_module")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU())
            self.fc = nn.Linear(30, 20)
            self.head = self.fc  # the same module twice: listed once, as modules() does

    Net.__module__, Net.__qualname__ = fake.__name__, "Net"
    fake.Net = Net
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    model = seeded(Net())
    torch.save(model, tmp_path / "net.pt")
    monkeypatch.delitem(sys.modules, fake.__name__)
    got = details(tmp_path / "net.pt")
    same_rows_as_state_dict(got, model)
    assert list(got["longname"]) == ["fc", "features.0"]  # the state dict's keys, in their natural order
    skipped = htsr.analyze(tmp_path / "net.pt").skipped
    assert list(skipped["longname"]) == ["head"] and skipped["reason"].str.contains("tied").all()
    assert fake.__name__ not in sys.modules  # never imported


def test_tied_weights_in_a_pickled_model_are_analyzed_once(tmp_path):
    emb = nn.Embedding(60, 24)
    head = nn.Linear(24, 60, bias=False)
    head.weight = emb.weight
    model = seeded(nn.Sequential(emb, nn.Linear(24, 24), head))
    torch.save(model, tmp_path / "tied.pt")
    skipped = htsr.analyze(tmp_path / "tied.pt").skipped
    assert skipped["reason"].str.contains("tied: same tensor as 0.weight").sum() == 1
    same_rows_as_state_dict(details(tmp_path / "tied.pt"), model)


@pytest.mark.parametrize("where", ["state-dict", "module-attribute"])
def test_a_reduce_payload_never_runs_and_the_tensors_are_still_read(tmp_path, where):
    target = tmp_path / "MARKER"
    model = small_model()
    if where == "state-dict":
        obj = dict(model.state_dict())
        obj["evil"] = MarkerPayload(target)
    else:
        obj = model
        model.evil = MarkerPayload(target)  # plain attribute: pickled with the module
    path = tmp_path / "evil.pt"
    torch.save(obj, path)
    assert not target.exists()
    got = details(path)
    assert not target.exists()
    same_rows_as_state_dict(got, model)


def test_a_payload_naming_a_code_running_callable_is_refused(tmp_path):
    class SystemPayload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {tmp_path / 'MARKER'}",))

    model = small_model()
    model.evil = SystemPayload()
    torch.save(model, tmp_path / "evil.pt")
    with pytest.raises(UnsafeFileError, match="system") as e:
        details(tmp_path / "evil.pt")
    assert str(tmp_path / "evil.pt") in str(e.value)
    assert not (tmp_path / "MARKER").exists()


def test_reading_never_calls_torch_load(tmp_path, monkeypatch):
    model = small_model()
    torch.save(model, tmp_path / "m.pt")

    def forbidden(*a, **k):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", forbidden)
    assert len(details(tmp_path / "m.pt")) == 5


def test_bfloat16_float16_and_views_are_decoded(tmp_path):
    rng = np.random.default_rng(3)
    base = torch.from_numpy(rng.standard_normal((64, 40)).astype(np.float32))
    sd = {"a.weight": base.to(torch.bfloat16), "b.weight": base.to(torch.float16),
          "c.weight": base[8:40, 4:30],  # a strided view into a larger storage
          "d.weight": base.t()}
    torch.save(sd, tmp_path / "mixed.pt")
    source = open_source(tmp_path / "mixed.pt")
    got = {t.key: t.load() for t in source.tensors}
    assert {t.key: t.dtype for t in source.tensors} == {"a.weight": "bfloat16", "b.weight": "float16",
                                                        "c.weight": "float32", "d.weight": "float32"}
    np.testing.assert_array_equal(got["a.weight"], base.to(torch.bfloat16).float().numpy())
    np.testing.assert_array_equal(got["b.weight"], base.to(torch.float16).numpy())
    np.testing.assert_array_equal(got["c.weight"], base[8:40, 4:30].numpy())
    np.testing.assert_array_equal(got["d.weight"], base.t().numpy())
    assert not got["c.weight"].flags.writeable


def test_sharded_bin_folder_follows_the_index_order(tmp_path):
    model = small_model()
    sd = model.state_dict()
    keys = list(sd)
    shard_of = {k: f"pytorch_model-0000{1 + i % 2}-of-00002.bin" for i, k in enumerate(keys)}
    for fname in set(shard_of.values()):
        torch.save({k: sd[k] for k in keys if shard_of[k] == fname}, tmp_path / fname)
    order = list(reversed(keys))  # the index order wins over the natural order
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {k: shard_of[k] for k in order}}))
    source = open_source(tmp_path)
    assert [t.key for t in source.tensors] == [k for k in order if k.endswith(".weight")]
    rows = details(tmp_path)
    by_name = rows.set_index("name")["alpha"]
    ref = details(sd).set_index("name")["alpha"]
    pd.testing.assert_series_equal(by_name.sort_index(), ref.sort_index())
    (tmp_path / shard_of[keys[0]]).unlink()
    with pytest.raises(SourceError, match="missing"):
        open_source(tmp_path)


def test_lying_storage_records_are_source_errors(tmp_path):
    import zipfile

    torch.save({"w.weight": torch.zeros(30, 20)}, tmp_path / "ok.pt")
    with zipfile.ZipFile(tmp_path / "ok.pt") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    storage = next(n for n in members if "/data/" in n)
    cases = {"short-storage": {storage: members[storage][:100]},
             "no-storage": {storage: None}}
    for name, change in cases.items():
        path = tmp_path / f"{name}.pt"
        with zipfile.ZipFile(path, "w") as out:
            for n, b in members.items():
                b = change.get(n, b)
                if b is not None:
                    out.writestr(n, b)
        with pytest.raises(SourceError, match="claims 600 elements but holds 100 bytes|missing from the archive"):
            source = open_source(path)
            [t.load() for t in source.tensors]


def test_legacy_format_whole_models_and_state_dicts(tmp_path):
    """Files written with ``_use_new_zipfile_serialization=False`` (torch < 1.6's format) read the same way."""
    model = small_model()
    torch.save(model, tmp_path / "whole.bin", _use_new_zipfile_serialization=False)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "sd.bin", _use_new_zipfile_serialization=False)
    same_rows_as_state_dict(details(tmp_path / "whole.bin"), model)
    pd.testing.assert_frame_equal(details(tmp_path / "sd.bin"), details(model.state_dict()))
    target = tmp_path / "MARKER"
    model.evil = MarkerPayload(target)
    torch.save(model, tmp_path / "evil.bin", _use_new_zipfile_serialization=False)
    same_rows_as_state_dict(details(tmp_path / "evil.bin"), model)
    assert not target.exists()
    data = (tmp_path / "whole.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-100])
    with pytest.raises(SourceError, match="cut.bin"):
        details(tmp_path / "cut.bin")


def test_checkpoint_dicts_in_memory_find_their_weights():
    model = small_model()
    pd.testing.assert_frame_equal(details({"model": model, "epoch": 2}), details(model))
    pd.testing.assert_frame_equal(details({"state_dict": model.state_dict(), "step": 1}), details(model.state_dict()))
    with pytest.raises(SourceError, match="holds no tensors"):
        details({"config": {"lr": 0.1}, "epoch": 2})


class Settings:
    """An ordinary object a checkpoint may carry (paths, partials, namespaces): never refused, never run."""

    def __init__(self, tmp_path):
        import functools
        import types

        self.out_dir = tmp_path
        self.act = functools.partial(max, 0)
        self.ns = types.SimpleNamespace(lr=0.1)


def test_ordinary_python_objects_in_a_checkpoint_are_not_refused(tmp_path):
    model = small_model()
    torch.save({"model": model, "settings": Settings(tmp_path), "hook": model.forward}, tmp_path / "ck.pt")
    same_rows_as_state_dict(details(tmp_path / "ck.pt"), model)
