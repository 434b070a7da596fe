"""Known answers for the option modules: vectors, inverse, intra, stacked, detX/ERG, option figures."""

from __future__ import annotations

import numpy as np
import pytest

import htsr
from htsr.config import AnalysisConfig
from htsr.errors import OptionError
from htsr.spectral.esd import compute_esd, top_esd
from htsr.spectral.intra import align_pair, intra_esd, intra_matrix, reference_slice
from htsr.spectral.inverse import inverse_evals
from htsr.spectral.marchenko_pastur import detx, detx_result
from htsr.spectral.stacked import reference_matrix, stack_matrices
from htsr.spectral.vectors import (
    COLUMNS,
    discrete_entropy,
    localization_ratio,
    participation_ratio,
    vector_columns,
    vector_metrics,
)


def test_vector_ratios_known_answers():
    e = np.zeros(16)
    e[3] = 1.0                      # fully localized
    flat = np.full(16, 0.25)        # fully spread, unit norm
    assert localization_ratio(e) == 1.0 and participation_ratio(e) == 1.0
    assert localization_ratio(flat) == pytest.approx(16.0)
    assert participation_ratio(flat) == pytest.approx(16 ** 0.25)   # ‖v‖₂/‖v‖₄ = 1/(16·0.25⁴)^¼
    assert localization_ratio(-flat) == localization_ratio(flat)    # sign invariant
    # discrete entropy: all |v| equal -> one occupied bin; a spread vector fills many bins
    assert discrete_entropy(flat) < 1e-5
    v = np.random.default_rng(0).standard_normal(4000)
    assert discrete_entropy(v) > 3.5


def test_vector_columns_split_and_values():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((1, 120, 40))
    vm = vector_metrics(W)
    np.testing.assert_allclose(vm.evals, np.linalg.eigvalsh(W[0].T @ W[0]), rtol=1e-10)
    cols = vector_columns(W, num_tail=10).as_dict()
    assert set(cols) == set(COLUMNS) and len(COLUMNS) == 12
    assert cols["tail_mean_loc_ratio"] == pytest.approx(np.mean(vm.loc_ratio[-10:]))
    assert cols["bulk_var_part_ratio"] == pytest.approx(np.var(vm.part_ratio[:-10]))
    everything = vector_columns(W, num_tail=None).as_dict()
    assert np.isnan(everything["bulk_mean_loc_ratio"]) and everything["tail_mean_loc_ratio"] == pytest.approx(np.mean(vm.loc_ratio))


def test_inverse_alternates_over_conv_slices():
    per = [np.array([2.0]), np.array([4.0]), np.array([8.0]), np.array([16.0])]  # rf = 4
    # slice k inverted rf - k times: 4, 3, 2, 1 -> slices 1 and 3 inverted
    assert inverse_evals(per).tolist() == sorted([2.0, 0.25, 8.0, 1 / 16])
    assert inverse_evals([np.array([0.5, 2.0])]).tolist() == [0.5, 2.0]
    W = {"fc.weight": np.random.default_rng(0).standard_normal((80, 30))}
    plain = htsr.analyze(W).details
    inv = htsr.analyze(W, inverse=True).details
    assert inv["lambda_max"].iloc[0] == pytest.approx(1 / np.linalg.eigvalsh(W["fc.weight"].T @ W["fc.weight"]).min())
    assert inv["sv_max"].iloc[0] == plain["sv_max"].iloc[0]     # singular values stay those of W


def test_intra_alignment_and_product():
    A, B = np.arange(12.0).reshape(3, 4), np.arange(20.0).reshape(5, 4)
    a, b = align_pair(A, B)
    assert a.shape == (3, 4) and b.shape == (4, 5)
    X = intra_matrix(A, B)
    np.testing.assert_allclose(X, A @ B.T / (np.linalg.norm(A) * np.linalg.norm(B)))
    s1 = intra_matrix(A, B, sparsify=True, rng=np.random.default_rng(3))
    s2 = intra_matrix(A, B, sparsify=True, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(s1, s2)
    assert intra_matrix(np.ones((2, 3)), np.ones((5, 7))) is None
    esd = intra_esd(np.diag([9.0, 4.0, 1.0]), N=3, n_comp=2)
    assert esd.evals.tolist() == [4.0, 9.0] and esd.sv_max == 3.0 and esd.sv_min == 2.0
    conv = np.zeros((4, 8, 3, 3))
    conv[:, :, 0, 0] = 1.0
    assert reference_slice(conv).shape == (8, 4)   # first tap, larger side first


def test_intra_rows_and_options():
    rng = np.random.default_rng(0)
    W = {"a.weight": rng.standard_normal((60, 40)), "b.weight": rng.standard_normal((30, 60)),
         "c.weight": rng.standard_normal((7, 11))}
    d = htsr.analyze(W, intra=True, sparsify=False).details
    assert d["name"].tolist() == ["1 X 2 "] and bool(d["Xflag"].iloc[0])
    X = W["b.weight"] @ W["a.weight"]
    X = X / (np.linalg.norm(W["a.weight"]) * np.linalg.norm(W["b.weight"]))
    assert d["lambda_max"].iloc[0] == pytest.approx(np.linalg.svd(X, compute_uv=False).max())
    a = htsr.analyze(W, intra=True, seed=1).details
    b = htsr.analyze(W, intra=True, seed=1).details
    assert a["alpha"].tolist() == b["alpha"].tolist()
    with pytest.raises(OptionError):
        AnalysisConfig(intra=True, randomize=True)


def test_stacked_standardization():
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])
    b = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    S = stack_matrices([a, b])
    mad_a = np.median(np.abs(a - np.median(a, axis=0)), axis=0)
    np.testing.assert_allclose(S.T[:2] if S.shape[0] < S.shape[1] else S[:2], (a - np.median(a)) / mad_a)
    assert S.shape == (5, 3) and (S[2:, 2] == 0).all()           # b padded with a zero column
    conv = np.random.default_rng(0).standard_normal((4, 6, 2, 2))
    assert reference_matrix(conv).shape == (6, 16)               # taps (6, 4) side by side
    esd = compute_esd(np.random.default_rng(1).standard_normal((1, 50, 20)), 50)
    top = top_esd(esd.evals, 5, 50)
    assert top.evals.size == 5 and top.sv_min == pytest.approx(np.sqrt(esd.evals[-5]))
    d = htsr.analyze({"a.weight": np.random.default_rng(2).standard_normal((30, 20)),
                      "b.weight": np.random.default_rng(3).standard_normal((40, 20))}, stacked=True).details
    assert d[["layer_id", "name", "layer_type", "N", "M", "num_evals"]].values.tolist() == [[0, "Stacked Layer", "stacked", 70, 20, 20]]


def test_erg_columns_are_detx_with_the_reference_names():
    ev = np.sort(np.random.default_rng(0).standard_t(3, 60) ** 2)
    res = detx_result(ev)
    num, val = detx(ev)
    assert (res.num, res.val) == (num, val)
    assert res.val_rescaled == pytest.approx(val * ev.size / ev.sum())
    d = htsr.WeightWatcher(model={"fc.weight": np.random.default_rng(0).standard_normal((90, 40))}).analyze(ERG=True)
    assert (d["ERG_gap"] == d["num_ERG_spikes"] - d["num_pl_spikes"]).all()


def test_option_figures(tmp_path):
    pytest.importorskip("matplotlib")
    W = {"fc.weight": np.random.default_rng(0).standard_t(3, (120, 60))}
    htsr.analyze(W, savefig=str(tmp_path), deltas=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"layer1.fc.deltaEs.png", "layer1.fc.level-stats.png"} <= names
    w = htsr.WeightWatcher(model=W)
    table = w.analyze_vectors(savefig=str(tmp_path / "v"))
    assert list(table.columns[:2]) == ["layer_id", "name"] and len(table.columns) == 14
    assert {p.name for p in (tmp_path / "v").iterdir()} == {"layer1.fc.vector_metrics.png", "layer1.fc.vector_hists.png"}
    vm = w.vector_metrics(np.ones((2, 9)) / 3)
    assert vm["localization_ratio"].tolist() == pytest.approx([9.0, 9.0])


@pytest.mark.parametrize("opts", [{"fix_fingers": "xmin_peak", "pl_package": "powerlaw"}, {"fit": "TPL", "pl_package": "powerlaw"},
                                  {"glorot_fix": True}, {"xmax": "force", "pl_package": "powerlaw"}, {"intra": True},
                                  {"stacked": True}, {"vectors": True}, {"inverse": True}, {"ERG": True}, {"deltas": True}])
def test_reference_options_now_run(opts):
    rng = np.random.default_rng(0)
    sd = {"a.weight": rng.standard_normal((40, 30)), "b.weight": rng.standard_normal((25, 40))}
    d = htsr.WeightWatcher(model=sd).analyze(**opts)
    assert len(d) >= 1 and set(d["status"]) <= {"success", "failed"} and (d["status"] == "success").any()


def test_reference_refusals_are_option_errors():
    sd = {"a.weight": np.random.default_rng(0).standard_normal((40, 30))}
    for opts in ({"fit": "TPL"}, {"xmax": "force"}, {"fit": "E_TPL", "fix_fingers": "clip_xmax", "pl_package": "powerlaw"},
                 {"vectors": True, "inverse": True}, {"intra": True, "vectors": True}):
        with pytest.raises(OptionError):
            htsr.WeightWatcher(model=sd).analyze(**opts)
