"""Parity with the reference tool (weightwatcher 0.7.7) on all-MiniLM-L6-v2.

Golden file: tests/data/minilm_ww077_default.csv (the reference's analyze() with defaults).
Integers and strings must match exactly, floats within 1e-6 relative (sv_min 1e-3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DATA

import htsr

GOLDEN = DATA / "minilm_ww077_default.csv"
DESCRIBE = DATA / "minilm_ww077_describe.csv"


def _golden() -> pd.DataFrame:
    return pd.read_csv(GOLDEN, keep_default_na=False, na_values=[])


def assert_rows_match(ours: pd.DataFrame, ref: pd.DataFrame, skip=()) -> None:
    for col in ref.columns:
        if col in skip:
            continue
        a, b = ours[col].to_numpy(), ref[col].to_numpy()
        if ref[col].dtype.kind == "f":
            rtol = 1e-3 if col == "sv_min" else 1e-6
            np.testing.assert_allclose(a.astype(float), b, rtol=rtol, atol=0, err_msg=col)
        else:
            assert [str(x) for x in a] == [str(x) for x in b], col


def test_module_matches_reference_table(minilm_model):
    details = htsr.WeightWatcher(model=minilm_model).analyze()
    ref = _golden()
    assert len(details) == len(ref) == 39
    assert list(details.columns[: len(ref.columns)]) == list(ref.columns)
    assert_rows_match(details, ref)


def test_summary_matches_reference_means(minilm_model):
    watcher = htsr.WeightWatcher(model=minilm_model)
    watcher.analyze()
    summary = watcher.get_summary()
    ref = _golden()
    assert set(summary) == {"log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank"}
    for key, value in summary.items():
        assert value == pytest.approx(ref[key].mean(), rel=1e-9)


def test_describe_matches_reference(minilm_model):
    ours = htsr.WeightWatcher(model=minilm_model).describe()
    ref = pd.read_csv(DESCRIBE)
    assert list(ours.columns) == list(ref.columns)
    pd.testing.assert_frame_equal(ours.reset_index(drop=True), ref, check_dtype=False)


def test_safetensors_file_gives_the_same_numbers(minilm_path, minilm_model):
    by_file = htsr.analyze(minilm_path / "model.safetensors").details
    ref = _golden()
    # rows are matched by longname; ids follow the state-dict rule (count of .weight keys from 1)
    ours = by_file.set_index("longname").loc[ref["longname"]].reset_index()
    assert len(by_file) == 39
    assert_rows_match(ours, ref, skip=("layer_id", "name"))
    assert (ours["name"] == ours["longname"]).all()
    # natural key order, ids count every .weight key starting at 1 (LayerNorm weights included)
    assert by_file["longname"].iloc[0] == "embeddings.position_embeddings"
    assert by_file["layer_id"].is_monotonic_increasing


def test_folder_equals_file(minilm_path):
    a = htsr.analyze(minilm_path).details
    b = htsr.analyze(minilm_path / "model.safetensors").details
    pd.testing.assert_frame_equal(a, b)


def test_skipped_token_type_embeddings_has_reason(minilm_model):
    report = htsr.analyze(minilm_model)
    row = report.skipped.set_index("name").loc["token_type_embeddings"]
    assert "min_evals" in row["reason"]
    assert row["shape"] == "(2, 384)"
