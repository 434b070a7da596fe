"""Property and fuzz tests: the fits and matrix extraction on any input, the readers on mutated bytes.

Only :class:`htsr.HtsrError` may escape a reader; a fit returns a result (``status`` ``failed`` when it
cannot fit), never an exception. Mutation cases are seeded (``np.random.default_rng(case)``), so a
failure names the case that reproduces it.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import htsr
from htsr import matrices
from htsr.config import AnalysisConfig, LayerType
from htsr.errors import HtsrError, LayerError
from htsr.sources import open_source
from htsr.spectral import marchenko_pastur

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

positive = st.floats(min_value=0.0, max_value=1e300, exclude_min=True, allow_nan=False, allow_infinity=False)
spectra = hnp.arrays(np.float64, st.integers(0, 300), elements=positive)
# realistic spectra too: many distinct values spread over decades
spread = st.builds(lambda seed, n, a: np.random.default_rng(seed).pareto(a, n) + 1e-3,
                   st.integers(0, 2**32 - 1), st.integers(2, 400), st.floats(0.3, 8.0))


# ---------------------------------------------------------------- fits

@FAST
@given(st.one_of(spectra, spread))
def test_fit_powerlaw_on_any_positive_finite_array(evals):
    before = evals.copy()
    fit = htsr.fit_powerlaw(evals)
    assert fit.status in ("success", "failed")
    if fit.status == "success":
        assert np.isfinite(fit.alpha) and fit.alpha > 1
        assert 0 <= fit.D <= 1 and fit.sigma >= 0 and fit.num_pl_spikes >= 1
        assert fit.xmin <= fit.xmax == np.max(evals)
        assert fit.reason == ""
    else:
        assert np.isnan(fit.alpha) and np.isnan(fit.D) and fit.reason
    np.testing.assert_array_equal(evals, before)  # the caller's array is untouched


normal_positive = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)


any_positive = st.floats(min_value=5e-324, max_value=1e300, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(np.float64, st.integers(1, 60), elements=any_positive), st.floats(1.0, 50.0), st.integers(1, 500))
def test_mp_fit_on_any_positive_array_fits_or_refuses_with_value_error(evals, Q, M):
    """Subnormal spectra cannot be rescaled to mean 1: a ValueError (the engine leaves the columns NaN), never another error or a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            fit = marchenko_pastur.fit_mp(evals, Q=Q, M=M)
        except ValueError:
            return
    assert np.isfinite(fit.sigma_mp) and fit.sigma_mp > 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(hnp.arrays(np.float64, st.integers(1, 120), elements=normal_positive), spread),
       st.floats(1.0, 50.0), st.integers(1, 500))
def test_mp_fit_on_any_positive_finite_array(evals, Q, M):
    """Any positive spectrum of normal floats fits."""
    fit = marchenko_pastur.fit_mp(evals, Q=Q, M=M)
    assert np.isfinite(fit.sigma_mp) and fit.sigma_mp > 0
    assert 0 <= fit.num_spikes <= evals.size
    assert np.isfinite(fit.W_scale) and fit.W_scale > 0
    assert 0 < fit.mp_softrank and np.isfinite(fit.mp_softrank)
    assert 0 <= fit.bulk_min <= fit.bulk_max <= fit.edge


def test_subnormal_spectra_leave_a_row_with_the_mp_columns_empty():
    """Weights so small that their eigenvalues underflow: the run goes on, the fits fail cleanly."""
    W = np.random.default_rng(0).standard_normal((50, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's underflow warnings inside the MP fit
        report = htsr.analyze({"tiny.weight": W * 1e-160, "ok.weight": W}, mp_fit=True, randomize=True, seed=1)
    d = report.details.set_index("name")
    assert d.loc["ok", "status"] == "success" and np.isfinite(d.loc["ok", "sigma_mp"]), d.loc["ok", "reason"]
    assert d.loc["tiny", "status"] == "failed" and np.isnan(d.loc["tiny", "alpha"])


# ---------------------------------------------------------------- matrix extraction

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.bool_, np.complex64]


@st.composite
def weight_arrays(draw):
    ndim = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=ndim, max_size=ndim)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    return draw(hnp.arrays(dtype, shape))  # any values: NaN, Inf, huge, subnormal, zero


@FAST
@given(weight_arrays(), st.booleans())
def test_matrix_extraction_on_any_array(array, conv2d_norm):
    original = array.copy()
    ltype = {2: LayerType.DENSE, 3: LayerType.CONV1D, 4: LayerType.CONV2D}[array.ndim]
    try:
        W, note = matrices.as_float(array, "w")
    except LayerError as exc:
        assert str(exc).startswith("invalid: ")
        return
    finally:
        assert array.tobytes() == original.tobytes()
    assert W.dtype == np.float64 and W.shape == array.shape and np.isfinite(W).all()
    assert note == ("" if array.dtype.kind == "f" else f"{array.dtype.name} weights analyzed as floats")
    stack = matrices.slices(W, ltype, conv2d_norm)
    g = matrices.geometry(array.shape)
    assert stack.shape == (g.rf, array.shape[0], array.shape[1])
    assert (min(stack.shape[1:]), max(stack.shape[1:])) == (g.M, g.N)
    scale = 0.5 if (conv2d_norm and ltype is LayerType.CONV2D) else 1.0
    np.testing.assert_allclose(np.sum(stack ** 2), scale * np.sum(W ** 2), rtol=1e-12)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weight_arrays())
def test_a_run_with_any_broken_layer_still_analyzes_the_healthy_one(array):
    ok = np.random.default_rng(0).standard_normal((30, 20))
    report = htsr.analyze({"x.weight": array, "ok.weight": ok}, min_evals=1)
    d = report.details.set_index("name")
    assert d.loc["ok", "status"] == "success"
    listed = set(d.index) | set(report.skipped["name"])
    assert "x" in listed
    if "x" in d.index:
        assert d.loc["x", "status"] in ("success", "failed", "invalid")
        assert (d.loc["x", "status"] == "success") == (np.isfinite(d.loc["x", "alpha"]))


# ---------------------------------------------------------------- readers fed mutated bytes

def mutate(data: bytes, rng: np.random.Generator, hot: int | None = None) -> bytes:
    """1–3 random edits: bit flips, overwrites, truncation, insertion, deletion, boundary bytes.

    ``hot`` (a byte count) makes most edits land in the first ``hot`` bytes (a header).
    """
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        if not b:
            b = bytearray(rng.bytes(int(rng.integers(1, 16))))
        span = hot if hot and rng.random() < 0.7 else len(b)
        pos = int(rng.integers(0, max(min(span, len(b)), 1)))
        op = int(rng.integers(0, 6))
        if op == 0:
            b[pos] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            n = int(rng.integers(1, 9))
            b[pos:pos + n] = rng.bytes(n)
        elif op == 2:
            del b[pos:]
        elif op == 3:
            b[pos:pos] = rng.bytes(int(rng.integers(1, 9)))
        elif op == 4:
            del b[pos:pos + int(rng.integers(1, 9))]
        else:
            b[pos] = int(rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x30, 0x39, 0x2D, 0x22, 0x5B, 0x7B]))
    return bytes(b)


def mutate_safetensors_header(data: bytes, rng: np.random.Generator) -> bytes:
    """Edit the JSON header's values (dtype, shape, offsets) and re-frame it, sometimes with a wrong length."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    key = sorted(header)[int(rng.integers(len(header)))]
    field = ["dtype", "shape", "data_offsets"][int(rng.integers(3))]
    choices = [0, -1, 1, 2**31, 2**64, 10**30, 1.5, "3", None, [], [1], [2, 3, 4], "F8_E4M3", "BF16", "I8",
               "F64", "BOOL", "C64", "X9", {"a": 1}]
    value = choices[int(rng.integers(len(choices)))]
    if isinstance(header[key], dict):
        if field != "dtype" and isinstance(header[key].get(field), list) and header[key][field] and rng.random() < 0.6:
            header[key][field][int(rng.integers(len(header[key][field])))] = value
        else:
            header[key][field] = value
    raw = json.dumps(header).encode()
    length = len(raw) + int(rng.choice([0, 0, 0, -1, 1, 8]))
    return struct.pack("<Q", max(length, 0)) + raw + data[8 + n:]


MAX_LOAD = 32 << 20  # bytes: a mutated header may claim a huge tensor; plan() gates and the memory check stop those


def read_everything(path: Path) -> None:
    """Open, plan and load every tensor the way analyze does; only HtsrError may come out."""
    from htsr import engine

    source = open_source(path)
    for p in engine.plan(source, AnalysisConfig(min_evals=1)):
        t = p.tensor
        if math.prod(t.shape) * 8 > MAX_LOAD:
            continue
        try:
            array = t.load()
            assert isinstance(array, np.ndarray) and tuple(array.shape) == tuple(t.shape), t.where
            if p.geometry is not None and not p.reason:
                matrices.as_float(array, t.where)
        except HtsrError:
            pass


def run_cases(base: bytes, suffix: str, cases: int, tmp_path: Path, first_seed: int, edit) -> dict:
    """Feed ``cases`` mutations of ``base`` to the reader; return the escapes and the outcome counts."""
    escaped, outcomes = [], {"ok": 0, "HtsrError": 0}
    path = tmp_path / f"fuzz{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in range(first_seed, first_seed + cases):
            rng = np.random.default_rng(case)
            path.write_bytes(edit(base, rng))
            try:
                read_everything(path)
                outcomes["ok"] += 1
            except HtsrError:
                outcomes["HtsrError"] += 1
            except Exception as exc:  # noqa: BLE001 - what the test is looking for
                escaped.append(f"case {case}: {exc.__class__.__name__}: {str(exc)[:120]}")
    assert not escaped, f"{len(escaped)} of {cases} mutated {suffix} files raised a non-htsr error:\n" + "\n".join(escaped[:10])
    return outcomes


def small_arrays() -> dict:
    rng = np.random.default_rng(1)
    return {"a.weight": rng.standard_normal((12, 10)).astype(np.float32), "b.bias": np.ones(4, np.float32),
            "c.weight": rng.integers(-9, 9, (10, 11)).astype(np.int8),
            "d.weight": rng.standard_normal((2, 3, 3, 3)).astype(np.float16)}


def test_safetensors_reader_on_mutated_bytes(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "base.safetensors"
    sn.save_file(small_arrays(), str(path))
    base = path.read_bytes()
    n = struct.unpack("<Q", base[:8])[0]
    raw = run_cases(base, ".safetensors", 1500, tmp_path, 0, lambda b, r: mutate(b, r, hot=8 + n))
    structured = run_cases(base, ".safetensors", 700, tmp_path, 10_000, mutate_safetensors_header)
    # the fuzz reaches both outcomes: some mutations still read (data bytes), most headers are refused
    assert raw["ok"] > 50 and raw["HtsrError"] > 500
    assert structured["ok"] > 20 and structured["HtsrError"] > 200


def test_npz_reader_on_mutated_bytes(tmp_path):
    path = tmp_path / "base.npz"
    np.savez(path, **small_arrays())
    base = path.read_bytes()
    plain = run_cases(base, ".npz", 900, tmp_path, 20_000, mutate)
    compressed_path = tmp_path / "basez.npz"
    np.savez_compressed(compressed_path, **small_arrays())
    zipped = run_cases(compressed_path.read_bytes(), ".npz", 500, tmp_path, 30_000, mutate)
    # zip CRCs catch most data edits; some mutations (zip comments, padding, names) still read
    assert plain["ok"] > 10 and plain["HtsrError"] > 500 and zipped["HtsrError"] > 300


def test_pickle_readers_on_mutated_bytes(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {k: torch.from_numpy(v) for k, v in small_arrays().items()}
    zip_path, legacy_path = tmp_path / "base.pt", tmp_path / "legacy.bin"
    torch.save(sd, zip_path)
    torch.save(sd, legacy_path, _use_new_zipfile_serialization=False)
    plain = pickle.dumps(small_arrays(), protocol=2)  # numpy globals: refused
    z = run_cases(zip_path.read_bytes(), ".pt", 500, tmp_path, 40_000, mutate)
    legacy = run_cases(legacy_path.read_bytes(), ".bin", 500, tmp_path, 50_000, lambda b, r: mutate(b, r, hot=900))
    refused = run_cases(plain, ".pth", 300, tmp_path, 60_000, mutate)
    assert z["HtsrError"] > 100 and legacy["HtsrError"] > 100 and refused["HtsrError"] == 300
    assert z["ok"] + legacy["ok"] > 20
