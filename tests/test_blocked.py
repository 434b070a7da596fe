"""Bounded-memory route for large matrices: block-summed Gram matrix, streamed checks, max_N=None."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import htsr
from htsr import blocked
from htsr.errors import LayerError
from htsr.matrices import as_float
from htsr.sources.base import StoredMatrix
from htsr.sources.safetensors_file import file_entries
from htsr.spectral.esd import compute_esd


def _bf16_bytes(a: np.ndarray) -> bytes:
    return (np.ascontiguousarray(a, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def write_safetensors(path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """A safetensors file written by hand: {key: (dtype tag, array)}; BF16 arrays given as float32."""
    header, blobs, offset = {}, [], 0
    for key, (tag, arr) in tensors.items():
        raw = _bf16_bytes(arr) if tag == "BF16" else np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[key] = {"dtype": tag, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _bf16_round(a: np.ndarray) -> np.ndarray:
    return (np.ascontiguousarray(a, dtype=np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)


@pytest.mark.parametrize("shape", [(300, 100), (100, 300), (257, 257), (40, 1000)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_blocked_esd_equals_whole_matrix(shape, dtype):
    rng = np.random.default_rng(hash(shape) % 1000)
    W = (rng.standard_normal(shape) * 0.1).astype(dtype)
    N = max(shape)
    whole = compute_esd(W[None].astype(np.float64), N)
    for block in (16, 97, 10 ** 6):  # 16 rows (or columns) per block, uneven blocks, one block
        got, note = blocked.blocked_esd(StoredMatrix.from_array(W), N, block_elements=block * min(shape))
        assert note == ""
        top = whole.evals[-1]
        np.testing.assert_allclose(got.evals, whole.evals, rtol=0, atol=1e-12 * top)
        big = whole.evals > 1e-3 * top
        np.testing.assert_allclose(got.evals[big], whole.evals[big], rtol=1e-12)
        assert got.sv_max == pytest.approx(whole.sv_max, rel=1e-13)
        assert got.sv_min == pytest.approx(whole.sv_min, rel=1e-9)
        assert got.rank_loss == whole.rank_loss


@pytest.mark.parametrize("cblas", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocked_gram_is_the_gram_matrix_and_orientation(monkeypatch, cblas, dtype):
    if not cblas:  # numpy's matmul into a buffer instead of the in-place CBLAS update
        monkeypatch.setattr(blocked, "_syrk", lambda name: None)
    W = np.arange(1.0, 43.0).reshape(6, 7)
    for m in (W, W.T.copy()):  # rows < cols: column blocks; rows > cols: row blocks
        G, _ = blocked.blocked_gram(StoredMatrix.from_array(m), dtype=dtype, block_elements=8)
        assert G.dtype == dtype
        np.testing.assert_array_equal(G, W @ W.T)  # integers: exact
    W = np.random.default_rng(0).standard_normal((1500, 1100))  # several 1024-wide tiles to mirror
    G, _ = blocked.blocked_gram(StoredMatrix.from_array(W), dtype=dtype, block_elements=400 * 1100)
    np.testing.assert_array_equal(G, G.T)
    np.testing.assert_allclose(G, W.T @ W, rtol=0, atol=(1e-12 if dtype == np.float64 else 1e-3) * 1500)


@pytest.mark.parametrize("shape", [(300, 100), (100, 300), (97, 97)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gram_tiles_are_bit_identical_for_any_thread_count(shape, dtype):
    """The intra-layer split: a fixed tile partition, so 1, 2 or 3 threads give the same bits."""
    W = np.random.default_rng(6).standard_normal(shape)
    m = StoredMatrix.from_array(W)
    kw = dict(dtype=dtype, block_elements=23 * min(shape), panel=16)  # uneven blocks and tiles
    one, _ = blocked.blocked_gram(m, threads=1, **kw)
    for threads in (2, 3, None):
        many, _ = blocked.blocked_gram(m, threads=threads, **kw)
        assert many.tobytes() == one.tobytes()
    want = W.T @ W if shape[0] >= shape[1] else W @ W.T
    np.testing.assert_allclose(one, want, rtol=0, atol=(1e-13 if dtype == np.float64 else 1e-5) * np.abs(want).max())
    np.testing.assert_array_equal(one, one.T)
    wide, _ = blocked.blocked_gram(m, threads=2, **dict(kw, panel=1024))  # one tile: a single syrk per block
    np.testing.assert_allclose(wide, one, rtol=0, atol=(1e-13 if dtype == np.float64 else 1e-5) * np.abs(want).max())
    e1, _ = blocked.blocked_esd(m, max(shape), block_elements=23 * min(shape), threads=1)
    e2, _ = blocked.blocked_esd(m, max(shape), block_elements=23 * min(shape), threads=2)
    assert e1.evals.tobytes() == e2.evals.tobytes() and (e1.sv_min, e1.rank_loss) == (e2.sv_min, e2.rank_loss)


def test_gram_tiles_wait_for_the_pool_on_bad_blocks():
    """A NaN found in a later block while the pool adds an earlier one: the error, after the tiles finish."""
    W = np.random.default_rng(7).standard_normal((400, 64))
    W[350, 3] = np.nan
    with pytest.raises(LayerError, match="NaN"):
        blocked.blocked_gram(StoredMatrix.from_array(W), "w", block_elements=50 * 64, threads=2, panel=16)


def test_ill_conditioned_falls_back_to_streamed_qr():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((400, 60))
    W[:, 7] = W[:, 8]  # rank 59: λmin/λmax ~ 1e-32, below the Gram route's resolution
    whole = compute_esd(W[None], 400)
    got, _ = blocked.blocked_esd(StoredMatrix.from_array(W), 400, block_elements=50 * 60)
    sv = np.linalg.svd(W, compute_uv=False)
    assert got.rank_loss == whole.rank_loss == 1
    assert got.sv_min < 1e-12 * sv[0]  # the Gram route alone would give ~1e-7·s_max
    np.testing.assert_allclose(np.sqrt(got.evals[1:]), np.sort(sv)[1:], rtol=1e-12)
    r = blocked.streamed_r(StoredMatrix.from_array(W.T.copy()), block_elements=3 * 400)  # wide: QR of Wᵀ
    assert r.shape == (60, 60) and np.allclose(np.tril(r, -1), 0)
    np.testing.assert_allclose(np.sort(np.linalg.svd(r, compute_uv=False))[1:], np.sort(sv)[1:], rtol=1e-12)
    got = blocked.streamed_singular_values(StoredMatrix.from_array(W), block_elements=7 * 60)  # blocks < M rows
    np.testing.assert_allclose(got[:-1], sv[:-1], rtol=1e-12)


def _planted(rows: int, sv: np.ndarray, seed: int = 9) -> np.ndarray:
    """A rows×len(sv) matrix with the singular values ``sv``."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((rows, sv.size)))
    v, _ = np.linalg.qr(rng.standard_normal((sv.size, sv.size)))
    return (u * sv) @ v.T


@pytest.mark.parametrize("tiny", [[3e-7], [2e-7, 5e-7, 1e-6], [0.0]])
def test_fallback_refines_only_the_small_end(monkeypatch, tiny):
    """λ ≤ 1e-11·λmax: those few from Lanczos on R, the rest from the Gram matrix; the SVD's numbers."""
    sv = np.concatenate([tiny, np.linspace(1.0, 2.0, 300 - len(tiny))])
    W = _planted(420, sv)
    svd = np.sort(np.linalg.svd(W, compute_uv=False))
    used = []
    real = blocked.smallest_singular_values
    monkeypatch.setattr(blocked, "smallest_singular_values", lambda r, k: used.append(k) or real(r, k))
    got, _ = blocked.blocked_esd(StoredMatrix.from_array(W), 420, block_elements=64 * 300)
    assert used == [len(tiny)]
    np.testing.assert_allclose(got.evals, svd ** 2, rtol=0, atol=1e-14 * 4.0)
    if tiny[0]:
        assert got.sv_min == pytest.approx(svd[0], rel=1e-7)  # the Gram route alone: ~1e-8·s_max absolute
        assert got.rank_loss == 0
    else:
        assert got.sv_min < 1e-13 and got.rank_loss == 1 == compute_esd(W[None], 420).rank_loss
    monkeypatch.setattr(blocked, "SMALL_END_MAX", 0)  # more below than refined: the full SVD of R, as before
    full, _ = blocked.blocked_esd(StoredMatrix.from_array(W), 420, block_elements=64 * 300)
    np.testing.assert_allclose(full.evals, got.evals, rtol=0, atol=1e-14 * 4.0)
    assert full.rank_loss == got.rank_loss and used == [len(tiny)]


def test_fallback_small_end_declines_a_wide_spread():
    """Values far apart (a solve's error is relative to the largest 1/σ²): None, and the full SVD is taken."""
    sv = np.concatenate([[1e-9, 1e-6], np.linspace(1.0, 2.0, 298)])
    W = _planted(300, sv)
    r = blocked.streamed_r(StoredMatrix.from_array(W))
    assert blocked.smallest_singular_values(r, 2) is None
    assert blocked.smallest_singular_values(r, 1)[0] == pytest.approx(1e-9, abs=1e-14)
    r[5, 5] = 0.0
    assert blocked.smallest_singular_values(r, 1) is None
    got, _ = blocked.blocked_esd(StoredMatrix.from_array(W), 300)
    assert got.sv_min == pytest.approx(1e-9, abs=1e-14)
    np.testing.assert_allclose(np.sqrt(got.evals[1:]), sv[1:], rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_block_checks_give_the_whole_matrix_messages(dtype):
    W = np.ones((50, 20), dtype=dtype)
    W[3, 4] = np.nan
    W[40, 1] = np.nan
    W[45, 2] = np.inf
    for bad in (W, np.zeros((50, 20), dtype=dtype)):
        with pytest.raises(LayerError) as whole:
            as_float(bad, "w")
        with pytest.raises(LayerError) as parts:
            blocked.blocked_gram(StoredMatrix.from_array(bad), "w", block_elements=100)
        assert str(parts.value) == str(whole.value)


def test_block_checks_nan_counts_span_blocks():
    W = np.ones((50, 20))
    W[3, 4] = W[40, 1] = np.nan
    W[45, 2] = -np.inf
    with pytest.raises(LayerError, match=r"invalid: 2 NaN and 1 Inf entries"):
        blocked.blocked_gram(StoredMatrix.from_array(W), "w", block_elements=100)
    with pytest.raises(LayerError, match="overflow"):
        blocked.blocked_gram(StoredMatrix.from_array(np.full((30, 20), 1e152)), "w", block_elements=40)
    _, note = blocked.blocked_gram(StoredMatrix.from_array(np.eye(30, 20, dtype=np.int8)), "w", block_elements=40)
    assert note == "int8 weights analyzed as floats"
    with pytest.raises(LayerError, match="complex"):
        blocked.blocked_gram(StoredMatrix.from_array(np.ones((30, 20), dtype=np.complex64)), "w")


def test_safetensors_stored_matrix_decodes_blocks(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((37, 23)).astype(np.float32)
    h = rng.standard_normal((23, 37)).astype(np.float16)
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"a.weight": ("BF16", a), "h.weight": ("F16", h), "b.bias": ("F32", a[0])})
    entries = {e.key: e for e in file_entries(path)}
    assert entries["b.bias"].stored is None  # 1-D
    for key, want in (("a.weight", _bf16_round(a)), ("h.weight", h)):
        m = entries[key].stored()
        assert m.shape == want.shape
        np.testing.assert_array_equal(m.decoded(), entries[key].load())
        np.testing.assert_array_equal(m.rows(5, 9), want[5:9])
        np.testing.assert_array_equal(m.cols(3, 20), want[:, 3:20])


def _model(tmp_path, rng):
    q = rng.standard_normal((64, 64)).astype(np.float32) / 8
    up = rng.standard_normal((176, 64)).astype(np.float32) / 8
    down = rng.standard_normal((64, 176)).astype(np.float32) / 8
    small = rng.standard_normal((20, 12)).astype(np.float32)
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"l.0.q.weight": ("BF16", q), "l.0.up.weight": ("BF16", up),
                             "l.0.down.weight": ("BF16", down), "l.0.small.weight": ("F32", small)})
    return path


def test_engine_blocked_route_matches_whole_route(tmp_path, monkeypatch):
    path = _model(tmp_path, np.random.default_rng(5))
    opts = dict(randomize=True, mp_fit=True, workers=2, progress=False)
    whole = htsr.analyze(str(path), **opts).details
    monkeypatch.setattr(blocked, "BLOCKED_MIN_ELEMENTS", 1000)  # every matrix but 'small' in blocks
    monkeypatch.setattr(blocked, "BLOCK_BYTES", 8 * 64 * 10)  # ten rows (or columns) per block
    seen = []
    real = blocked.blocked_esd
    monkeypatch.setattr(blocked, "blocked_esd", lambda m, *a, **k: seen.append(m.shape) or real(m, *a, **k))
    parts = htsr.analyze(str(path), **opts).details
    assert sorted(seen) == sorted([(64, 64), (176, 64), (64, 176)])
    assert list(parts["name"]) == list(whole["name"])  # model order
    for col in whole.columns:
        a, b = whole[col], parts[col]
        if col.startswith(("rand_", "max_rand", "num_traps", "ww_")) or a.dtype.kind not in "fc":
            # randomize shuffles the same values (bf16 decoded to float32 exactly): identical columns
            assert a.astype(str).tolist() == b.astype(str).tolist(), col
        else:
            np.testing.assert_allclose(b.astype(float), a.astype(float), rtol=1e-10, atol=1e-12, err_msg=col)


def test_engine_blocked_route_is_bit_identical_for_any_worker_count(tmp_path, monkeypatch):
    """workers=1 (one intra-layer thread) and workers=2 (two): the same table, to the bit."""
    path = _model(tmp_path, np.random.default_rng(8))
    monkeypatch.setattr(blocked, "BLOCKED_MIN_ELEMENTS", 1000)
    monkeypatch.setattr(blocked, "BLOCK_BYTES", 8 * 64 * 10)
    monkeypatch.setattr(blocked, "PANEL", 16)
    seen = []
    real = blocked.blocked_gram
    monkeypatch.setattr(blocked, "blocked_gram", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    one, two = (htsr.analyze(str(path), workers=w, progress=False).details for w in (1, 2))
    assert sorted(seen) == [1, 1, 1, 2, 2, 2]
    assert one.astype(str).equals(two.astype(str))


def test_max_n_none_lifts_the_embedding_skip(tmp_path):
    rng = np.random.default_rng(2)
    sd = {"embed_tokens.weight": rng.standard_normal((300, 16)), "fc.weight": rng.standard_normal((40, 16))}
    default = htsr.analyze(sd, max_N=200, progress=False)
    assert list(default.details["name"]) == ["fc"]
    reason = default.skipped.iloc[0]["reason"]
    assert "max_N=200" in reason and "max_N=None" in reason and "--max-n none" in reason
    lifted = htsr.analyze(sd, max_N=None, progress=False)
    assert list(lifted.details["name"]) == ["embed_tokens", "fc"] and lifted.skipped.empty
    assert lifted.details["N"].tolist() == [300, 40]


def test_memory_estimate_for_blocked_layers():
    from htsr.blocked import memory_reason
    from htsr.matrices import work_bytes

    shape = (28672, 8192)
    need = blocked.gram_bytes(shape, 2)
    assert need < 2.3e9 < work_bytes(shape, 4)  # bf16 data + 3 Gram-sized buffers + two blocks
    assert memory_reason(shape, "bfloat16", int(2.5e9)) is None
    assert memory_reason(shape, "bfloat16", int(2.5e9), randomize=True) is not None


@pytest.mark.parametrize("shape", [(300, 100), (100, 300)])
def test_torch_route_matches_numpy_route(shape):
    """The GPU code path, run by torch on the CPU (no GPU needed): same eigenvalues and checks."""
    pytest.importorskip("torch")
    W = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    m = StoredMatrix.from_array(W)
    want, _ = blocked.blocked_esd(m, max(shape), block_elements=3000)
    got, note = blocked.blocked_esd_torch(m, max(shape), device="cpu", block_elements=3000)
    assert note == ""
    np.testing.assert_allclose(got.evals, want.evals, rtol=0, atol=1e-12 * want.evals[-1])
    assert got.rank_loss == want.rank_loss
    bad = W.copy()
    bad[5, 5] = np.nan
    with pytest.raises(LayerError, match="1 NaN"):
        blocked.blocked_esd_torch(StoredMatrix.from_array(bad), max(shape), device="cpu", block_elements=3000)


@pytest.mark.parametrize("ill", [True, False])
def test_r_computed_beside_the_eigensolver_when_a_core_is_spare(monkeypatch, ill):
    """With ``spare()`` true the fallback's R is streamed on a helper thread while the eigensolver runs:
    used when the fallback needs it (ill-conditioned), stopped and dropped when not; the same ESD either way."""
    import threading
    import time

    sv = np.concatenate([[1e-9] if ill else [0.5], np.linspace(1.0, 2.0, 299)])
    W = _planted(700, sv)
    plain, _ = blocked.blocked_esd(StoredMatrix.from_array(W), 700, block_elements=64 * 300)
    calls, started = [], threading.Event()
    real_r, real_eig, real_absorb = blocked.streamed_r, blocked.eigvalsh_gram, blocked._absorb

    def streamed_r(m, block_elements=None, stop=None):
        started.set()
        out = real_r(m, block_elements, stop)
        calls.append((threading.current_thread().name, stop is not None, out is None))
        return out

    def eig_once_r_streams(x):  # the eigensolver finishes while R is still streaming
        assert started.wait(10)
        return real_eig(x)

    monkeypatch.setattr(blocked, "streamed_r", streamed_r)
    monkeypatch.setattr(blocked, "eigvalsh_gram", eig_once_r_streams)
    monkeypatch.setattr(blocked, "_absorb", lambda *a: time.sleep(0.02) or real_absorb(*a))
    monkeypatch.setattr(blocked, "SPARE_POLL", 0.01)
    looks = []  # spare() turns true only at its third look: the R starts while the eigensolver runs

    def spare() -> bool:
        looks.append(1)
        return len(looks) >= 3

    got, _ = blocked.blocked_esd(StoredMatrix.from_array(W), 700, block_elements=64 * 300, spare=spare)
    for t in threading.enumerate():  # a dropped R's thread may still be finishing its block
        if t.name == "htsr-qr":
            t.join(10)
    np.testing.assert_array_equal(got.evals, plain.evals)
    assert got.sv_min == plain.sv_min and got.rank_loss == plain.rank_loss
    assert len(calls) == 1 and calls[0][0].startswith("htsr-qr") and calls[0][1]  # once, beside, stoppable
    assert calls[0][2] is (not ill)  # stopped and dropped (None) when the Gram eigenvalues sufficed
    calls.clear()
    monkeypatch.setattr(blocked, "eigvalsh_gram", real_eig)
    never, _ = blocked.blocked_esd(StoredMatrix.from_array(W), 700, block_elements=64 * 300, spare=lambda: False)
    np.testing.assert_array_equal(never.evals, plain.evals)
    assert [c[0].startswith("htsr-qr") for c in calls] == ([False] if ill else [])  # after the eigensolver, here


def test_streamed_r_through_scipy_when_numpy_has_no_dtpqrt(monkeypatch):
    """numpy builds without OpenBLAS's ``dtpqrt`` take scipy's wrapper: the same R to rounding."""
    W = np.random.default_rng(4).standard_normal((500, 120))
    fast = blocked.streamed_r(StoredMatrix.from_array(W), block_elements=120 * 64)
    monkeypatch.setattr(blocked, "_tpqrt", lambda: None)
    slow = blocked.streamed_r(StoredMatrix.from_array(W), block_elements=120 * 64)
    np.testing.assert_allclose(np.abs(slow), np.abs(fast), rtol=0, atol=1e-12 * np.abs(fast).max())
    np.testing.assert_allclose(np.linalg.svd(fast, compute_uv=False), np.linalg.svd(W, compute_uv=False), rtol=1e-12)
