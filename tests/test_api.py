"""The public API: exports, options, describe, compat keywords, errors, and never modifying the model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.errors import HtsrError, OptionError, SourceError, UnknownOptionError


def tiny(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "layers.10.weight": rng.standard_normal((80, 40)),
        "layers.2.weight": rng.standard_normal((120, 60)),
        "layers.2.bias": rng.standard_normal(120),
        "embed_tokens.weight": rng.standard_normal((500, 32)),
        "norm.weight": np.ones(40),
    }


# the reference's (weightwatcher 0.7.7) public constants, in htsr.compat (not in htsr's own namespace)
REFERENCE_CONSTANTS = """
ACCURATE ACCURATE_SVD ADD_BIASES AUTO BIDIRECTIONAL CHANNELS CHANNELS_STR CKA CLIP_XMAX CONV1D CONV2D CONV2D_FFT
CONV2D_NORM DEFAULT_FINGER_THRESH DEFAULT_MAX_EVALS DEFAULT_MAX_FINGERS DEFAULT_MAX_N DEFAULT_MIN_EVALS DEFAULT_PARAMS
DEFAULT_PEFT DEFAULT_POOL DEFAULT_POWERLAW_PACKAGE DEFAULT_START_ID DEFAULT_WW2X DEFAULT_XMAX DEF_SAVE_DIR DELTA_ES DENSE
DETX EPSILON ERROR EUCLIDEAN EVALS_HALF_THRESH EVALS_THRESH EXPONENTIAL E_TPL FAILED FAST FAST_SVD FFT FINGER_THRESH
FIRST FIT FIX_FINGERS FORCE FRAMEWORK GLOROT_FIT GLOROT_FIX HALF_EPSILON INTRA INVERSE KERAS KERAS_H5_FILE LAMBDA_MIN
LAST LAYERS LAYER_TYPE LAYER_TYPES_SUPPORTED LOG_NORMAL MAX_EVALS MAX_FINGERS MAX_N MAX_NUM_EVALS MBEDDING METHODS
METRICS MIN_EVALS MIN_NUM_EVALS MODEL_FILE_FORMATS MP_FIT NORM NORMALIZE ONNX OVER_TRAINED OVER_TRAINED_THRESH PEFT
PEFT_WITH_BASE PL PLOT PL_PACKAGE POOL POWERLAW POWERLAW_PACKAGE POWER_LAW PYSTATEDICT PYTORCH RANDOMIZE RAW RESCALE
RMT SAFETENSORS SAVEDIR SAVEFIG SMOOTH SOURCE SPARSIFY STACKED START_IDS SUCCESS SVD SVD_METHOD TENSORFLOW TOLERANCE TPL
TRUNCATED TRUNCATED_POWER_LAW TRUNCATED_SVD UNDER_TRAINED UNDER_TRAINED_THRESH UNKNOWN VALID_SVD_METHODS VECTORS
WEAK_RANK_LOSS_TOLERANCE WW2X WW_CONFIG_FILENAME WW_FLATFILES WW_NAME WW_POWERLAW WW_POWERLAW_PACKAGE XMAX XMAX_FORCE
XMIN XMIN_MAX XMIN_PEAK
""".split()


def test_all_is_pinned():
    assert sorted(htsr.__all__) == sorted([
        "__version__", "analyze", "describe", "compare", "Monitor", "fit_powerlaw", "PowerLawFit", "WeightWatcher", "HtsrError",
        "SourceError", "UnsafeFileError", "LayerError", "OptionError", "UnknownOptionError",
        "remove_traps", "SVDSmoothing", "SVDSharpness", "Report", "LayerResult", "AnalysisConfig",
        "prune", "pruning", "TempBalance",
    ])
    for name in htsr.__all__:
        assert hasattr(htsr, name), name
    # the reference's names stay out of htsr's own namespace: some contradict htsr (min_evals 8, ERROR = -1)
    assert not any(hasattr(htsr, name) for name in ("DEFAULT_MIN_EVALS", "ERROR", "LAYER_TYPE", "METRICS"))


def test_compat_all_is_pinned():
    import htsr.compat as ww

    assert sorted(ww.__all__) == sorted(["WeightWatcher", "ReferenceTreatment", "REFERENCE", "reference_distances",
                                         *REFERENCE_CONSTANTS])
    assert len(REFERENCE_CONSTANTS) == 124
    for name in ww.__all__:
        assert hasattr(ww, name), name
    assert ww.WeightWatcher is htsr.WeightWatcher


def test_reference_constants_values():
    import htsr.compat as ww

    assert (ww.LAYER_TYPE.CONV2D, ww.LAYER_TYPE.DENSE, ww.LAYER_TYPE.EMBEDDING) == ("conv2d", "dense", "embedding")
    assert (ww.PL, ww.TPL, ww.E_TPL, ww.POWER_LAW) == ("PL", "TPL", "E_TPL", "power_law")
    assert (ww.XMIN_PEAK, ww.CLIP_XMAX, ww.RAW, ww.EUCLIDEAN, ww.CKA) == ("xmin_peak", "clip_xmax", "raw",
                                                                              "euclidean", "cka")
    assert ww.DEF_SAVE_DIR == "ww-img" and ww.DEFAULT_MIN_EVALS == 8 and ww.DEFAULT_MAX_EVALS == 15000
    assert ww.FRAMEWORK.PYTORCH == "pytorch" and ww.METRICS.ALPHA_WEIGHTED == "alpha_weighted"
    # every layer type htsr reports is spelled as the reference's LAYER_TYPE value
    from htsr.config import LayerType

    assert {t.value for t in LayerType} - {"other"} <= set(vars(ww.LAYER_TYPE).values())


def test_layer_type_constant_selects_layers():
    rng = np.random.default_rng(0)
    model = {"conv.weight": rng.standard_normal((16, 8, 3, 3)), "fc.weight": rng.standard_normal((30, 20))}
    details = htsr.WeightWatcher(model=model).analyze(layers=[htsr.compat.LAYER_TYPE.CONV2D])
    assert list(details["name"]) == ["conv"]


def test_compat_positional_order_and_conflicts():
    model = tiny()
    w = htsr.WeightWatcher(model=model)
    # reference order: model, layers, min_evals, max_evals, …
    by_position = w.analyze(None, [], 50, 100)
    by_keyword = w.analyze(layers=[], min_evals=50, max_evals=100)
    pd.testing.assert_frame_equal(by_position, by_keyword)
    assert list(by_position["name"]) == ["layers.2"]  # M = 60; min_evals=50 drops M = 40 and 32
    assert list(w.describe(None, [], 50)["name"]) == list(by_position["name"])
    with pytest.raises(TypeError, match="multiple values for argument 'min_evals'"):
        w.analyze(None, [], 50, min_evals=3)
    with pytest.raises(TypeError, match="positional"):
        w.analyze(None, *([None] * 40))


def test_compat_min_evals_default_and_zero_means_no_limit():
    rng = np.random.default_rng(1)
    model = {"a.weight": rng.standard_normal((50, 8)), "b.weight": rng.standard_normal((50, 9)),
             "c.weight": rng.standard_normal((50, 7)), "d.weight": rng.standard_normal((50, 40))}
    w = htsr.WeightWatcher(model=model)
    assert list(w.analyze()["name"]) == ["a", "b", "d"]  # reference default min_evals=8
    assert list(w.analyze(min_evals=0)["name"]) == ["a", "b", "c", "d"]
    assert list(w.analyze(max_evals=10)["name"]) == ["a", "b"]
    assert list(w.analyze(max_evals=0)["name"]) == ["a", "b", "d"]
    with pytest.raises(OptionError):
        htsr.analyze(model, min_evals=0)  # htsr's own API keeps positive limits


def test_compat_get_weights_and_esd_reference_forms():
    rng = np.random.default_rng(2)
    conv = rng.standard_normal((8, 16, 3, 3))  # out < in: the reference transposes each slice
    dense = rng.standard_normal((30, 40))
    w = htsr.WeightWatcher(model={"conv.weight": conv, "fc.weight": dense})
    mats = w.get_Weights(layer=1, params=None)
    assert len(mats) == 9 and mats[0].shape == (16, 8)
    np.testing.assert_array_equal(mats[4], conv[:, :, 1, 1].T)
    assert w.get_Weights(layer="fc", params=dict(htsr.compat.DEFAULT_PARAMS))[0].shape == (30, 40)
    # the reference's get_ESD: raw slices whatever params says; conv2d_norm=True as a keyword: as analyze
    esd = w.get_ESD(layer=1, params={"conv2d_norm": True})
    sv = np.concatenate([np.linalg.svd(conv[:, :, i, j], compute_uv=False) for i in range(3) for j in range(3)])
    np.testing.assert_allclose(esd, np.sort(sv ** 2), rtol=1e-10)
    np.testing.assert_allclose(w.get_ESD(None, 1, False, None), np.sort(sv ** 2), rtol=1e-10)
    np.testing.assert_allclose(w.get_ESD(layer=1, conv2d_norm=True), np.sort(sv ** 2) / 2, rtol=1e-10)
    rand = w.get_ESD(None, 1, True, None)  # positional: model, layer, random, params
    assert rand.size == 72 and np.all(np.diff(rand) >= 0)
    with pytest.raises(UnknownOptionError):
        w.get_ESD(layer=1, params={"no_such_option": 1})
    with pytest.raises(NotImplementedError):
        w.get_ESD(layer=1, params={"glorot_fix": True})


def test_import_imports_no_framework():
    """``import htsr`` stays light: no framework, no pandas/scipy/matplotlib until a function needs them.

    (How long the import takes is a benchmark's business: ``python -X importtime -c "import htsr"``.)
    """
    code = "import sys, htsr; print(*[m for m in ('torch','onnx','matplotlib','pandas','scipy','keras','jax') " \
           "if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [], f"import htsr imported {out}"


def test_key_order_ids_and_types():
    report = htsr.analyze(tiny())
    d = report.details
    # natural sort: embed_tokens, layers.2, layers.10, norm; ids count every .weight key from 1
    assert list(d["name"]) == ["embed_tokens", "layers.2", "layers.10"]
    assert list(d["layer_id"]) == [1, 2, 3]
    assert list(d["layer_type"]) == ["embedding", "dense", "dense"]
    assert (d["name"] == d["longname"]).all()
    assert (d["status"] == "success").all() and (d["reason"] == "").all()
    assert report.skipped.empty  # the 1-D norm weight is not a layer


def test_describe_lists_every_weight():
    d = htsr.describe(tiny())
    assert list(d["name"]) == ["embed_tokens", "layers.2", "layers.10", "norm"]
    assert list(d["analyzed"]) == [True, True, True, False]
    assert "1-D" in d.loc[3, "reason"]
    assert d.loc[1, "num_evals"] == 60 and d.loc[1, "Q"] == 2.0


def test_layer_selection_by_id_name_type_and_exclusion():
    sd = tiny()
    assert list(htsr.analyze(sd, layers=[2]).details["name"]) == ["layers.2"]
    assert list(htsr.analyze(sd, layers=[-2]).details["name"]) == ["embed_tokens", "layers.10"]
    assert list(htsr.analyze(sd, layers="dense").details["name"]) == ["layers.2", "layers.10"]
    assert list(htsr.analyze(sd, layers=["-embedding"]).details["name"]) == ["layers.2", "layers.10"]
    assert list(htsr.analyze(sd, layers="layers.10").details["name"]) == ["layers.10"]
    skipped = htsr.analyze(sd, layers=[2]).skipped
    assert set(skipped["name"]) == {"embed_tokens", "layers.10"}
    assert (skipped["reason"] == "not selected by the 'layers' option").all()


def test_gates():
    rng = np.random.default_rng(0)
    sd = {"small.weight": rng.standard_normal((100, 5)), "wide.weight": rng.standard_normal((60, 30))}
    r = htsr.analyze(sd)
    assert list(r.details["name"]) == ["wide"]
    assert "min_evals=10" in r.skipped.iloc[0]["reason"]
    r = htsr.analyze(sd, max_evals=20, min_evals=2)
    assert list(r.details["name"]) == ["small"]
    r = htsr.analyze(sd, max_N=80, min_evals=2)
    assert list(r.details["name"]) == ["wide"] and "max_N=80" in r.skipped.iloc[0]["reason"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_evals": -3}, "The 'min_evals' option must be a positive integer; got -3."),
        ({"max_evals": 0}, "The 'max_evals' option must be a positive integer; got 0."),
        ({"seed": -1}, "The 'seed' option must be a non-negative integer; got -1."),
        ({"device": "tpu"}, "The 'device' option must be one of auto, cpu, cuda; got 'tpu'."),
        ({"pool": "yes"}, "The 'pool' option must be True or False; got 'yes'."),
    ],
)
def test_bad_option_values_fail_at_once(kwargs, message):
    with pytest.raises(OptionError) as info:
        htsr.analyze(tiny(), **kwargs)
    assert str(info.value) == message


def test_unknown_option_names_it():
    with pytest.raises(UnknownOptionError, match="'min_eval'"):
        htsr.analyze(tiny(), min_eval=3)
    with pytest.raises(TypeError, match="'foo'"):
        htsr.WeightWatcher(model=tiny()).analyze(foo=1)


@pytest.mark.parametrize("option, value", [("peft", "both"), ("conv2d_fft", True), ("fft", True), ("channels", "first")])
def test_unbuilt_reference_options_raise_not_implemented(option, value):
    with pytest.raises(NotImplementedError, match=option):
        htsr.WeightWatcher(model=tiny()).analyze(**{option: value})


def test_reference_defaults_are_accepted():
    w = htsr.WeightWatcher(model=tiny())
    d = w.analyze(layers=[], min_evals=10, max_evals=15000, max_N=50000, glorot_fix=False, plot=False,
                  randomize=False, mp_fit=False, conv2d_norm=True, ww2x=False, pool=True, conv2d_fft=False,
                  fft=False, deltas=False, intra=False, vectors=False, channels=None, stacked=False,
                  fix_fingers=False, xmin_max=None, fit="PL", sparsify=True, detX=False, svd_method="accurate",
                  tolerance=1e-6, start_ids=0, pl_package="ww", xmax=None, base_model=None, peft=False, inverse=False)
    assert len(d) == 3
    assert w.get_details() is d


def test_compat_get_esd_and_weights():
    sd = tiny()
    w = htsr.WeightWatcher(model=sd)
    ev = w.get_ESD(layer=2)
    np.testing.assert_allclose(ev, np.sort(np.linalg.svd(sd["layers.2.weight"], compute_uv=False) ** 2), rtol=1e-10)
    mats = w.get_Weights(layer="layers.2")
    assert len(mats) == 1 and np.array_equal(mats[0], sd["layers.2.weight"])
    with pytest.raises(HtsrError, match="no analyzable layer 99"):
        w.get_ESD(layer=99)


def test_errors_name_the_path_or_object(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(SourceError, match="nope.safetensors: no such file"):
        htsr.analyze(missing)
    with pytest.raises(SourceError, match="no 2-D"):
        htsr.analyze({"bias": np.ones(3)})
    with pytest.raises(SourceError, match="cannot read an object of type builtins.int"):
        htsr.analyze(42)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(SourceError, match="notes.txt: unknown file type"):
        htsr.analyze(notes)


def test_module_is_never_modified():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32),
                                torch.nn.Conv2d(8, 16, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attrs = [sorted(vars(m)) for m in model.modules()]
    d = htsr.WeightWatcher(model=model).analyze()
    assert list(d["layer_id"]) == [1, 3, 4] and list(d["name"]) == ["0", "2", "3"]
    assert list(d["layer_type"]) == ["dense", "dense", "conv2d"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [sorted(vars(m)) for m in model.modules()] == attrs


def test_tied_weights_analyzed_once():
    torch = pytest.importorskip("torch")

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(100, 24)
            self.head = torch.nn.Linear(24, 100, bias=False)
            self.head.weight = self.embed.weight

    r = htsr.analyze(Tied())
    assert list(r.details["name"]) == ["embed"]
    assert r.skipped.iloc[0]["reason"] == "tied: same tensor as embed"


def test_report_outputs_round_trip(tmp_path):
    import json

    r = htsr.analyze(tiny())
    csv_path = tmp_path / "out.csv"
    r.to_csv(csv_path)
    back = pd.read_csv(csv_path, keep_default_na=False)
    np.testing.assert_array_equal(back["alpha"].to_numpy(), r.details["alpha"].to_numpy())
    doc = json.loads(r.to_json())
    assert [row["name"] for row in doc["details"]] == list(r.details["name"])
    assert doc["meta"]["seed"] == 0 and doc["meta"]["htsr_version"] == htsr.__version__
    assert doc["summary"]["alpha"] == pytest.approx(r.summary["alpha"])
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left behind


def test_start_ids_shifts_module_ids():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(64, 128))
    assert list(htsr.WeightWatcher(model=model).analyze(start_ids=1)["layer_id"]) == [2]


def test_columns_doc_is_generated_from_the_schema():
    from pathlib import Path

    from htsr.report import REGENERATE_COLUMNS_DOC, SCHEMA, columns_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "columns.md"
    assert doc.read_text(encoding="utf-8") == columns_markdown(), f"regenerate it: {REGENERATE_COLUMNS_DOC}"
    assert len({c.name for c in SCHEMA}) == len(SCHEMA)  # each column declared once
    assert {c.origin for c in SCHEMA} == {"reference", "htsr"}
