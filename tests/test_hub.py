"""Hugging Face Hub names (htsr.hub), offline, on a cache laid out as huggingface_hub lays it out.

huggingface_hub has no public API that writes a cache without the network, so the test builds the
documented layout (models--org--name/{blobs,snapshots/<commit>,refs/<revision>}, files in snapshots
linked to blobs) and checks that huggingface_hub's own reader (``scan_cache_dir``) accepts it.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest

import htsr
from htsr.cli import main
from htsr.errors import SourceError
from htsr.hub import is_hub_name, parse_name, resolve, weight_patterns

hf = pytest.importorskip("huggingface_hub")
hf_constants = pytest.importorskip("huggingface_hub.constants")
safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _add_revision(cache: Path, repo: str, ref: str, commit: str, tensors: dict) -> None:
    """One snapshot of ``repo`` in the cache: model.safetensors and config.json as blobs, linked from snapshots/."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    files = {"model.safetensors": safetensors_numpy.save(tensors), "config.json": b'{"model_type": "bert"}',
             "tokenizer.json": b"{}"}
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / ref).write_text(commit)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    root = tmp_path / "hub"
    _add_revision(root, "org/tiny", "main", "a" * 40, {"fc.weight": rng.standard_normal((60, 30)).astype(np.float32)})
    _add_revision(root, "org/tiny", "v1", "b" * 40, {"fc.weight": rng.standard_normal((80, 40)).astype(np.float32),
                                                     "out.weight": rng.standard_normal((50, 20)).astype(np.float32)})
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf.is_offline_mode()
    monkeypatch.chdir(tmp_path)
    return root


def test_layout_is_read_by_huggingface_hub(cache):
    info = hf.scan_cache_dir(cache)
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == "org/tiny" and repo.repo_type == "model"
    assert {r.commit_hash for r in repo.revisions} == {"a" * 40, "b" * 40}
    assert {ref for r in repo.revisions for ref in r.refs} == {"main", "v1"}


def test_analyze_a_hub_name_offline(cache):
    report = htsr.analyze("org/tiny", progress=False)
    assert report.details[["name", "N", "M"]].values.tolist() == [["fc", 60, 30]]
    assert "snapshots" in report.meta["source"] and "a" * 40 in report.meta["source"]
    v1 = htsr.analyze("org/tiny@v1", progress=False)
    assert v1.details[["name", "N", "M"]].values.tolist() == [["fc", 80, 40], ["out", 50, 20]]
    by_commit = htsr.describe("org/tiny@" + "b" * 40)
    assert list(by_commit["name"]) == ["fc", "out"]


def test_cli_hub_name_offline_and_unknown_name(cache, capsys):
    out, err = io.StringIO(), io.StringIO()
    assert main(["analyze", "org/tiny@v1", "--format", "csv", "-q"], stdout=out, stderr=err) == 0
    assert out.getvalue().count("\n") == 3  # header + two layers
    out, err = io.StringIO(), io.StringIO()
    assert main(["analyze", "org/missing", "-q"], stdout=out, stderr=err) == 1
    line = err.getvalue()
    assert line.count("\n") == 1
    assert "org/missing" in line and "not in the Hugging Face cache" in line and "hf download org/missing" in line
    err = io.StringIO()
    assert main(["describe", "org/tiny@nope"], stdout=io.StringIO(), stderr=err) == 1
    assert "hf download org/tiny --revision nope" in err.getvalue()


def test_a_path_wins_over_a_hub_name(cache, tmp_path):
    local = tmp_path / "org" / "tiny"
    local.mkdir(parents=True)
    w = np.random.default_rng(1).standard_normal((70, 35)).astype(np.float32)
    (local / "model.safetensors").write_bytes(safetensors_numpy.save({"local.weight": w}))
    assert resolve("org/tiny") == "org/tiny"
    assert htsr.analyze("org/tiny", progress=False).details["name"].tolist() == ["local"]


def test_names_and_patterns():
    assert parse_name("a/b@v2.0") == ("a/b", "v2.0") and parse_name("a/b") == ("a/b", None)
    assert is_hub_name("sentence-transformers/all-MiniLM-L6-v2")
    for not_a_name in ("model.safetensors", "dir/model.safetensors", "./a/b", "/abs/path", "a/b/c", "gpt2", 3, None):
        assert not is_hub_name(not_a_name)
        assert resolve(not_a_name) == not_a_name
    both = ["config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json"]
    assert weight_patterns(both) == ["*.safetensors", "*.safetensors.index.json", "config.json", "adapter_config.json"]
    assert "*.bin" in weight_patterns(["pytorch_model.bin", "vocab.txt"])
    assert "*.safetensors" not in weight_patterns(["pytorch_model.bin"])


def test_missing_huggingface_hub_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(SourceError, match=r"pip install 'htsr\[hub\]'"):
        resolve("org/name")
