"""One transformer block with Llama-2-70B shapes: write it, then time htsr on it, ``fast=True`` and the floor.

Usage (the folder is written outside the repository, ~1.7 GB; nothing is committed)::

    python benchmarks/bench_big.py make DIR [--scale K]   # DIR/model-0000{1,2}-of-00002.safetensors + index
    python benchmarks/bench_big.py run DIR                # htsr analyze DIR in a subprocess: wall, CPU, peak RSS
    python benchmarks/bench_big.py compare DIR [--workers N] [--no-floor]   # default, fast=True, the floor

The block is bfloat16, sharded in two files with a ``model.safetensors.index.json``
(attention in the first shard, MLP in the second, index order = model order):
q_proj/o_proj 8192×8192, k_proj/v_proj 1024×8192, gate_proj/up_proj 28672×8192,
down_proj 8192×28672, and the two RMSNorm vectors. Entries are Gaussian with
standard deviation 0.02 from a fixed seed, plus a rank-8 spike so the
power-law fits have a tail. ``--scale K`` divides every dimension by K (e.g. 4:
a 2048-wide block of ~110 MB, for checking the benchmark itself); the large
layers then fall below the blocked route's 2²⁵ entries unless K ≤ 2, so
``compare`` lowers that limit to the scaled block's size (``--min-elements``).

``run`` starts ``python -m htsr analyze DIR --format csv -o FILE --quiet`` (options
after ``--`` are passed on, e.g. ``-- --workers 1``) and reads the child's peak
resident set size and CPU time from ``wait4``.

``compare`` runs, each in its own child process (so each has its own peak RSS):
``htsr.analyze(DIR)`` (default, float64), ``htsr.analyze(DIR, fast=True)``
(float32 Gram and eigensolver on the blocked layers), then the floor: each
matrix decoded to float64 in memory (not timed), then ``W.T @ W`` (BLAS
``syrk``) and ``numpy.linalg.eigvalsh`` timed with BLAS on every core
(threadpoolctl). It prints wall, CPU-seconds, cores used (CPU/wall) and peak RSS
of each, the default's wall over the floor's, the fast speed-up, and the alpha
difference per layer.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HIDDEN, KV, FFN = 8192, 1024, 28672
PREFIX = "model.layers.0."
SHARDS = {
    "model-00001-of-00002.safetensors": [
        ("input_layernorm.weight", (HIDDEN,)),
        ("self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
        ("self_attn.k_proj.weight", (KV, HIDDEN)),
        ("self_attn.v_proj.weight", (KV, HIDDEN)),
        ("self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
    ],
    "model-00002-of-00002.safetensors": [
        ("post_attention_layernorm.weight", (HIDDEN,)),
        ("mlp.gate_proj.weight", (FFN, HIDDEN)),
        ("mlp.up_proj.weight", (FFN, HIDDEN)),
        ("mlp.down_proj.weight", (HIDDEN, FFN)),
    ],
}
CHUNK_ROWS = 1024


def _bf16(a: np.ndarray) -> bytes:
    return (np.ascontiguousarray(a, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def _write_tensor(fh, shape: tuple[int, ...], rng: np.random.Generator) -> None:
    if len(shape) == 1:
        fh.write(_bf16(1.0 + 0.01 * rng.standard_normal(shape, dtype=np.float32)))
        return
    rows, cols = shape
    k = 8
    u = rng.standard_normal((rows, k), dtype=np.float32)
    v = rng.standard_normal((k, cols), dtype=np.float32) * np.float32(0.5 / np.sqrt(rows))
    for a in range(0, rows, CHUNK_ROWS):
        b = min(rows, a + CHUNK_ROWS)
        block = rng.standard_normal((b - a, cols), dtype=np.float32) * np.float32(0.02)
        block += u[a:b] @ v
        fh.write(_bf16(block))


def make(folder: Path, seed: int = 0, scale: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map = {}
    total = 0
    for fname, tensors in SHARDS.items():
        header, offset = {}, 0
        tensors = [(key, tuple(d // scale for d in shape)) for key, shape in tensors]
        for key, shape in tensors:
            nbytes = 2 * int(np.prod(shape))
            header[PREFIX + key] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            weight_map[PREFIX + key] = fname
            offset += nbytes
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        with open(folder / fname, "wb") as fh:
            fh.write(struct.pack("<Q", len(text)) + text)
            for _key, shape in tensors:
                _write_tensor(fh, shape, rng)
        total += offset
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    print(f"wrote {total / 1e9:.2f} GB into {folder}")


def _child(cmd: list[str], log: Path) -> tuple[float, float, int, int]:
    """Run ``cmd``; its (wall s, CPU s, peak RSS bytes, exit status), from ``wait4`` (this child alone)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, proc.returncode  # Linux: KiB


def _line(label: str, wall: float, cpu: float, peak: int) -> str:
    return (f"{label:<8} wall {wall:7.1f} s  cpu {cpu:7.1f} s  cores {cpu / wall:4.2f}  "
            f"peak RSS {peak / 2**30:5.2f} GiB")


def run(folder: Path, extra: list[str]) -> None:
    out = folder / "htsr-run.csv"
    cmd = [sys.executable, "-m", "htsr", "analyze", str(folder), "--format", "csv", "-o", str(out), *extra]
    wall, cpu, peak, rc = _child(cmd, folder / "htsr-run.log")
    if rc != 0:
        print((folder / "htsr-run.log").read_text())
        raise SystemExit(rc)
    import pandas as pd

    df = pd.read_csv(out)
    print(f"command: {' '.join(cmd[1:])}")
    print(f"wall {wall:.1f} s, cpu {cpu:.1f} s, peak RSS {peak / 2**30:.2f} GiB, {len(df)} rows, cores {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(df[["name", "N", "M", "alpha", "sv_max"]].to_string(index=False))


def child_analyze(folder: Path, out: Path, fast: bool, workers: int, min_elements: int | None) -> None:
    """In a child: ``htsr.analyze(folder, fast=fast)`` written to ``out`` (csv)."""
    import htsr
    from htsr import blocked

    if min_elements:
        blocked.BLOCKED_MIN_ELEMENTS = min_elements
    htsr.analyze(str(folder), fast=fast, workers=workers, progress=False).details.to_csv(out, index=False)


def child_floor(folder: Path) -> None:
    """In a child: float64 ``W.T @ W`` + ``eigvalsh`` of every matrix, in memory, BLAS on every core; prints seconds."""
    from threadpoolctl import threadpool_limits

    total = 0.0
    with threadpool_limits(limits=os.cpu_count()):
        for _name, w32 in _single_files(folder):
            w = w32.astype(np.float64)
            del w32
            t0 = time.perf_counter()
            g = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
            np.linalg.eigvalsh(g)
            total += time.perf_counter() - t0
            del w, g
    print(f"floor_seconds {total:.3f}")


def _single_files(folder: Path):
    """(name, float32 matrix) of each 2-D bfloat16 tensor of the block's shards, decoded here (no htsr involved)."""
    for fname in SHARDS:
        with open(folder / fname, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
            start = 8 + n
            for key, info in header.items():
                if key == "__metadata__" or len(info["shape"]) != 2:
                    continue
                a, b = info["data_offsets"]
                fh.seek(start + a)
                u32 = np.frombuffer(fh.read(b - a), dtype="<u2").astype(np.uint32)
                np.left_shift(u32, 16, out=u32)
                yield key, u32.view(np.float32).reshape(info["shape"])


def compare(folder: Path, workers: int, min_elements: int | None, floor_too: bool = True) -> None:
    import pandas as pd

    me = [sys.executable, os.path.abspath(__file__)]
    opts = ["--workers", str(workers)] + (["--min-elements", str(min_elements)] if min_elements else [])
    print(f"block {folder}, cores {os.cpu_count()}, workers {workers or 'one per core'}, "
          f"load {os.getloadavg()[0]:.1f} at start")
    runs = {}
    for label, flag in (("default", []), ("fast", ["--fast"])):
        out = folder / f"htsr-{label}.csv"
        wall, cpu, peak, rc = _child([*me, "child-analyze", str(folder), str(out), *flag, *opts],
                                     folder / f"htsr-{label}.log")
        if rc != 0:
            print((folder / f"htsr-{label}.log").read_text())
            raise SystemExit(rc)
        runs[label] = (wall, pd.read_csv(out))
        print(_line(label, wall, cpu, peak), flush=True)
    (t_def, d), (t_fast, f) = runs["default"], runs["fast"]
    ratio = ""
    if floor_too:
        log = folder / "htsr-floor.log"
        wall, cpu, peak, rc = _child([*me, "child-floor", str(folder)], log)
        if rc != 0:
            print(log.read_text())
            raise SystemExit(rc)
        floor = float(log.read_text().split()[-1])
        print(_line("floor", wall, cpu, peak) + f"  (syrk + eigvalsh alone: {floor:.1f} s; decoding not counted)")
        ratio = f"default / floor {t_def / floor:.2f}x   "
    print(f"{ratio}fast speed-up {t_def / t_fast:.2f}x   load {os.getloadavg()[0]:.1f} at end")
    both = d[["name", "N", "M", "alpha", "sv_max"]].merge(f[["name", "alpha"]], on="name", suffixes=("", "_fast"))
    both["abs_diff"] = (both["alpha_fast"] - both["alpha"]).abs()
    both["rel_diff"] = both["abs_diff"] / both["alpha"].abs()
    print(both.to_string(index=False, float_format=lambda x: f"{x:.6g}"))
    print(f"max |alpha_fast - alpha| {both['abs_diff'].max():.3g}")


def main(argv: list[str]) -> None:
    import argparse

    if argv[:1] == ["run"] and len(argv) > 1:
        run(Path(argv[1]), argv[3:] if len(argv) > 2 and argv[2] == "--" else argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("dir", type=Path)
    mk.add_argument("--scale", type=int, default=1, help="divide every dimension by K (default 1: full size)")
    for name in ("compare", "child-analyze"):
        c = sub.add_parser(name)
        c.add_argument("dir", type=Path)
        if name == "child-analyze":
            c.add_argument("out", type=Path)
            c.add_argument("--fast", action="store_true")
        c.add_argument("--workers", type=int, default=0, help="htsr's workers (default 0: one per core)")
        c.add_argument("--min-elements", type=int, default=None,
                       help="blocked route from this many entries (default: htsr's 2**25)")
        if name == "compare":
            c.add_argument("--no-floor", action="store_true", help="skip the floor (e.g. on a busy machine)")
    fl = sub.add_parser("child-floor")
    fl.add_argument("dir", type=Path)
    sub.add_parser("run", help="run DIR [-- htsr analyze options]")
    a = ap.parse_args(argv)
    if a.cmd == "make":
        make(a.dir, scale=a.scale)
    elif a.cmd == "compare":
        compare(a.dir, a.workers, a.min_elements, not a.no_floor)
    elif a.cmd == "child-analyze":
        child_analyze(a.dir, a.out, a.fast, a.workers, a.min_elements)
    else:
        child_floor(a.dir)


if __name__ == "__main__":
    main(sys.argv[1:])
