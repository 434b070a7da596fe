"""htsr.compare and WeightWatcher.distances: known answers, the reference's numbers, bad input."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import load_script

import htsr
from htsr.compare import esd_distance, linear_cka
from htsr.errors import HtsrError, OptionError

torch = pytest.importorskip("torch")
DATA = Path(__file__).parent / "data"


MAKE = load_script(DATA / "make" / "make_distances.py", "make_distances")
GOLDEN = json.loads((DATA / "distances_ww077.json").read_text())
_PAIRS: dict = {}


def pairs() -> dict:
    """The golden script's model pairs, built once (the models are only read)."""
    if not _PAIRS:
        _PAIRS.update(MAKE.models())
    return _PAIRS


def linear(fill: float):
    layer = torch.nn.Linear(200, 100)
    with torch.no_grad():
        layer.weight.fill_(fill)
        layer.bias.fill_(fill)
    return torch.nn.Sequential(layer)


# ---------------------------------------------------------------- htsr.compare
def test_identical_models_are_at_distance_zero_and_cka_one():
    model = MAKE.build(3)
    d = htsr.compare(model, model)
    ok = d[d["status"] == "ok"]
    assert len(ok) == len(d) == 8
    assert (ok["delta_W"] == 0).all() and (ok["rel_delta_W"] == 0).all()
    assert np.allclose(ok["cka"], 1.0, atol=1e-12)
    analyzed = ok[ok["alpha_a"].notna()]
    assert len(analyzed) == 7  # Linear(5, 3) is too small for the spectral columns, and says so
    assert (analyzed["delta_alpha"] == 0).all() and (analyzed["esd_distance"] == 0).all()
    assert (analyzed["delta_log_norm"] == 0).all()
    small = d[d["longname"] == "8"].iloc[0]
    assert math.isnan(small["alpha_a"]) and "min_evals" in small["reason"]
    assert (ok.loc[ok["layer_type"] == "dense", "delta_bias"].dropna() == 0).all()


def test_ones_vs_zeros_linear_known_norm():
    d = htsr.compare(linear(1.0), linear(0.0))
    row = d.iloc[0]
    assert row["status"] == "ok"
    assert row["delta_W"] == pytest.approx(math.sqrt(20000), rel=1e-12)
    assert row["rel_delta_W"] == pytest.approx(1.0, rel=1e-12)
    assert row["delta_bias"] == pytest.approx(10.0, rel=1e-12)  # √100
    assert math.isnan(row["cka"])  # a constant matrix has nothing left after centering


def test_layer_in_one_model_only_is_listed_and_shapes_checked():
    rng = np.random.default_rng(0)
    a = {"enc.weight": rng.standard_normal((60, 30)), "old.weight": rng.standard_normal((40, 20)),
         "head.weight": rng.standard_normal((20, 30))}
    b = {"enc.weight": a["enc.weight"] * 2.0, "new.weight": rng.standard_normal((40, 20)),
         "head.weight": rng.standard_normal((20, 31))}
    d = htsr.compare(a, b).set_index("longname")
    assert list(d.index) == ["enc", "head", "old", "new"]
    assert d.loc["old", "status"] == "only_a" and d.loc["new", "status"] == "only_b"
    assert d.loc["head", "status"] == "shape_mismatch" and "(20, 30) vs (20, 31)" in d.loc["head", "reason"]
    assert not math.isnan(d.loc["old", "alpha_a"]) and math.isnan(d.loc["old", "alpha_b"])
    # scaling by 2: ΔW = ‖W‖, CKA 1, every eigenvalue ×4 → log_norm +log10 4, ESD shifted by log10 4 decades
    enc = d.loc["enc"]
    assert enc["rel_delta_W"] == pytest.approx(1.0, rel=1e-12)
    assert enc["cka"] == pytest.approx(1.0, abs=1e-12)
    assert enc["delta_log_norm"] == pytest.approx(math.log10(4), rel=1e-9)
    assert enc["esd_distance"] == pytest.approx(math.log10(4), rel=1e-9)
    assert enc["delta_alpha"] == pytest.approx(0.0, abs=1e-9)  # alpha is scale-free


def test_compare_reads_files_and_modules_alike(tmp_path):
    from safetensors.numpy import save_file

    m1, m2 = MAKE.build(0), MAKE.build(1)
    save_file({k: v.detach().numpy() for k, v in m2.state_dict().items()}, str(tmp_path / "b.safetensors"))
    direct = htsr.compare(m1, m2)
    via_file = htsr.compare(m1.state_dict(), tmp_path / "b.safetensors")
    cols = ["delta_W", "rel_delta_W", "delta_bias", "cka", "delta_alpha", "esd_distance"]
    assert list(direct["longname"]) == list(via_file["longname"])
    assert np.allclose(direct[cols].to_numpy(float), via_file[cols].to_numpy(float), equal_nan=True)


def test_cka_known_values():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((400, 30))
    Q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    assert linear_cka(A, 5 * A @ Q) == pytest.approx(1.0, abs=1e-12)  # orthogonal and scale invariant
    B = rng.standard_normal((400, 30))
    assert linear_cka(A, B) < 0.15  # independent: near 0 (≈ p/n for n ≫ p)
    # wide matrices take the n×n Gram route; both routes equal the feature-space formula
    for shape in ((20, 50), (50, 20)):
        W, V = rng.standard_normal(shape), rng.standard_normal(shape)
        Wc, Vc = W - W.mean(0), V - V.mean(0)
        direct = np.linalg.norm(Wc.T @ Vc) ** 2 / (np.linalg.norm(Wc.T @ Wc) * np.linalg.norm(Vc.T @ Vc))
        assert linear_cka(W, W + V) == pytest.approx(
            np.linalg.norm(Wc.T @ (Wc + Vc)) ** 2 / (np.linalg.norm(Wc.T @ Wc) * np.linalg.norm((Wc + Vc).T @ (Wc + Vc))),
            rel=1e-10)
        assert linear_cka(W, V) == pytest.approx(direct, rel=1e-10)


def test_esd_distance_is_a_shift_in_decades():
    ev = np.random.default_rng(2).lognormal(size=500)
    assert esd_distance(ev, ev) == 0.0
    assert esd_distance(ev, 1000 * ev) == pytest.approx(3.0, rel=1e-12)
    assert esd_distance(ev, ev[:250]) > 0
    assert math.isnan(esd_distance(np.zeros(5), ev))


def test_compare_bad_input():
    with pytest.raises(HtsrError, match="no such file"):
        htsr.compare("does-not-exist.safetensors", {"a.weight": np.ones((20, 10))})
    with pytest.raises(OptionError):
        htsr.compare({"a.weight": np.ones((20, 10))}, {"a.weight": np.ones((20, 10))}, pool=False)


def test_compare_never_modifies_the_models():
    m1, m2 = MAKE.build(0), MAKE.build(1)
    before = [p.detach().clone() for p in list(m1.parameters()) + list(m2.parameters())]
    htsr.compare(m1, m2)
    after = list(m1.parameters()) + list(m2.parameters())
    assert all(torch.equal(x, y) for x, y in zip(before, after))


# ---------------------------------------------------------------- WeightWatcher.distances vs the reference
@pytest.mark.parametrize("case", GOLDEN["results"], ids=lambda c: f"{c['models']}-{c['method']}-pool{c['pool']}-{c['layers']}")
def test_distances_match_the_reference(case):
    m1, m2 = pairs()[case["models"]]
    avg_dW, avg_db, details = htsr.WeightWatcher().distances(m1, m2, method=case["method"], pool=case["pool"],
                                                           layers=case["layers"])
    ref = pd.DataFrame(case["details"])
    got = details.reset_index()
    assert list(got.columns) == case["columns"]
    assert len(got) == len(ref)
    for col in ("layer_id", "M", "N"):
        assert got[col].tolist() == ref[col].tolist(), col
    for col in ("method", "name", "longname"):
        assert got[col].astype(str).tolist() == ref[col].astype(str).tolist(), col
    assert got["b_shape"].astype(str).tolist() == ref["b_shape"].tolist()
    if "slice_id" in ref:
        assert got["slice_id"].tolist() == ref["slice_id"].tolist()
    # the reference computes in float32, htsr in float64
    assert np.allclose(got["delta_W"], ref["delta_W"], rtol=2e-5, atol=1e-6)
    assert np.allclose(got["delta_b"], ref["delta_b"], rtol=2e-5, atol=1e-6)
    assert avg_dW == pytest.approx(case["avg_dW"], rel=2e-5, abs=1e-6)
    assert avg_db == pytest.approx(case["avg_db"], rel=2e-5, abs=1e-6)


def test_distances_known_answer_and_errors():
    _, _, details = htsr.WeightWatcher().distances(linear(1.0), linear(0.0))
    assert details["delta_W"].iloc[0] == pytest.approx(math.sqrt(20000), rel=1e-12)
    assert details["delta_b"].iloc[0] == pytest.approx(10.0, rel=1e-12)
    with pytest.raises(OptionError, match="method"):
        htsr.WeightWatcher().distances(linear(1.0), linear(0.0), method="cosine")
    with pytest.raises(HtsrError, match="same layers"):
        htsr.WeightWatcher().distances(MAKE.build(0), linear(0.0))
    with pytest.raises(NotImplementedError, match="channels"):
        htsr.WeightWatcher().distances(linear(1.0), linear(0.0), channels="first")


# ---------------------------------------------------------------- CLI
def _files(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    a = {"enc.weight": rng.standard_normal((60, 30)).astype(np.float32), "old.weight": rng.standard_normal((40, 20)).astype(np.float32)}
    b = {"enc.weight": a["enc.weight"] * 2, "new.weight": rng.standard_normal((40, 20)).astype(np.float32)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


def test_cli_compare_formats_and_report(tmp_path):
    import io

    from htsr.cli import main

    a, b = _files(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert main(["compare", str(a), str(b), "--format", "json", "--report", str(tmp_path / "c.html")], out, err) == 0
    rows = json.loads(out.getvalue())
    assert [(r["longname"], r["status"]) for r in rows] == [("enc", "ok"), ("old", "only_a"), ("new", "only_b")]
    assert rows[0]["rel_delta_W"] == pytest.approx(1.0)
    page = (tmp_path / "c.html").read_text()
    assert "<svg" in page and page.count("<rect") >= 4 and "only_b" in page
    ids = re.findall(r'\bid="([^"]*)"', page)
    assert "layer-table" in ids and len(ids) == len(set(ids))  # no id twice (the section and its table)
    out = io.StringIO()
    assert main(["compare", str(a), str(b), "--format", "csv"], out, io.StringIO()) == 0
    frame = pd.read_csv(io.StringIO(out.getvalue()))
    assert list(frame["status"]) == ["ok", "only_a", "only_b"]
    out = io.StringIO()
    assert main(["compare", str(a), str(b), "--format", "table"], out, io.StringIO()) == 0
    assert "new: only_b" in out.getvalue()
    err = io.StringIO()
    assert main(["compare", str(a), str(tmp_path / "missing.safetensors")], io.StringIO(), err) == 1
    assert "missing.safetensors" in err.getvalue()


def test_invalid_weights_are_reported_not_raised():
    rng = np.random.default_rng(4)
    a = {"fc.weight": rng.standard_normal((40, 20)), "out.weight": rng.standard_normal((30, 20))}
    b = {"fc.weight": a["fc.weight"].copy(), "out.weight": a["out.weight"].copy()}
    b["fc.weight"][3, 2] = np.nan
    d = htsr.compare(a, b).set_index("longname")
    assert d.loc["fc", "status"] == "invalid" and "NaN" in d.loc["fc", "reason"] and "fc" in d.loc["fc", "reason"]
    assert math.isnan(d.loc["fc", "delta_W"])
    assert d.loc["out", "status"] == "ok" and d.loc["out", "delta_W"] == 0.0
