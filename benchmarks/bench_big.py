"""One transformer block with Llama-2-70B shapes: write it, then time ``htsr analyze`` on it and record its peak RSS.

Usage (the folder is written outside the repository, ~1.7 GB; nothing is committed)::

    python benchmarks/bench_big.py make DIR      # write DIR/model-0000{1,2}-of-00002.safetensors + index
    python benchmarks/bench_big.py run DIR       # htsr analyze DIR in a subprocess: wall time, peak RSS, rows

The block is bfloat16, sharded in two files with a ``model.safetensors.index.json``
(attention in the first shard, MLP in the second, index order = model order):
q_proj/o_proj 8192×8192, k_proj/v_proj 1024×8192, gate_proj/up_proj 28672×8192,
down_proj 8192×28672, and the two RMSNorm vectors. Entries are Gaussian with
standard deviation 0.02 from a fixed seed, plus a rank-8 spike so the
power-law fits have a tail.

``run`` starts ``python -m htsr analyze DIR --format csv -o FILE --quiet`` (options
after ``--`` are passed on, e.g. ``-- --workers 1``) and reads the child's peak
resident set size from ``getrusage(RUSAGE_CHILDREN)``.
"""

from __future__ import annotations

import json
import os
import resource
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


def make(folder: Path, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map = {}
    total = 0
    for fname, tensors in SHARDS.items():
        header, offset = {}, 0
        for key, shape in tensors:
            nbytes = 2 * int(np.prod(shape))
            header[PREFIX + key] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            weight_map[PREFIX + key] = fname
            offset += nbytes
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        with open(folder / fname, "wb") as fh:
            fh.write(struct.pack("<Q", len(text)) + text)
            for key, shape in tensors:
                _write_tensor(fh, shape, rng)
        total += offset
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    print(f"wrote {total / 1e9:.2f} GB into {folder}")


def run(folder: Path, extra: list[str]) -> None:
    out = folder / "htsr-run.csv"
    cmd = [sys.executable, "-m", "htsr", "analyze", str(folder), "--format", "csv", "-o", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = usage.ru_maxrss * 1024  # Linux: KiB
    cpu = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        print(proc.stderr)
        raise SystemExit(proc.returncode)
    import pandas as pd

    df = pd.read_csv(out)
    print(f"command: {' '.join(cmd[1:])}")
    print(f"wall {wall:.1f} s, cpu {cpu:.1f} s, peak RSS {peak / 2**30:.2f} GiB, {len(df)} rows, cores {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(df[["name", "N", "M", "alpha", "sv_max"]].to_string(index=False))


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in ("make", "run"):
        raise SystemExit(__doc__)
    folder = Path(argv[1])
    if argv[0] == "make":
        make(folder)
    else:
        run(folder, argv[3:] if len(argv) > 2 and argv[2] == "--" else argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
