"""Dequantizing one 7B-shaped layer (11008 × 4096) per scheme: time and memory beyond the float32 matrix.

Usage::

    python benchmarks/bench_quant.py [--out 11008] [--in 4096] [--repeat 2]

Random codes in each scheme's packed layout (the numbers do not matter, the
shapes do). For each scheme it prints the best wall time of ``repeat`` runs of
the pure-numpy dequantizer (:mod:`htsr.sources.quant.dequant`), the packed
size, and the peak memory the call allocates beyond its float32 result
(``tracemalloc``): issue 17 asks that a layer never hold more than its float32
matrix plus its packed form.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from htsr.sources.quant import dequant as dq


def cases(out: int, n_in: int, rng: np.random.Generator):
    def words(shape):
        return rng.integers(-2**31, 2**31 - 1, size=shape, dtype=np.int64).astype(np.int32)

    scales = rng.uniform(0.01, 0.1, (n_in // 128, out)).astype(np.float16)
    for bits in (4, 3, 8):
        qw, qz = words((n_in * bits // 32, out)), words((n_in // 128, -(-out * bits // 32)))
        yield f"gptq-int{bits}/g128", qw.nbytes, lambda qw=qw, qz=qz, bits=bits: dq.gptq(
            qw, qz, scales, np.arange(n_in) // 128, bits, 1)
    g_perm = rng.permutation(np.arange(n_in) // 128)
    qw, qz = words((n_in // 8, out)), words((n_in // 128, out // 8))
    yield "gptq-int4 act-order", qw.nbytes, lambda: dq.gptq(qw, qz, scales, g_perm, 4, 1)
    aw, az = words((n_in, out // 8)), words((n_in // 128, out // 8))
    yield "awq-int4/g128", aw.nbytes, lambda: dq.awq(aw, az, scales, 128)
    packed = rng.integers(0, 256, (out * n_in // 2, 1), dtype=np.uint8)
    absmax = rng.uniform(0.5, 2, out * n_in // 64).astype(np.float32)
    qmap = np.linspace(-1, 1, 16).astype(np.float32)
    yield "bnb-nf4", packed.nbytes, lambda: dq.bnb_4bit(packed, absmax, qmap, 64, (out, n_in))
    mlx = words((out, n_in // 8)).view(np.uint32)
    ms = rng.uniform(0.01, 0.1, (out, n_in // 64)).astype(np.float16)
    yield "mlx-q4/g64", mlx.nbytes, lambda: dq.mlx_affine(mlx, ms, ms, 4, 64)
    blocks = rng.integers(0, 256, (out, n_in // 32, 16), dtype=np.uint8)
    exps = rng.integers(120, 130, (out, n_in // 32), dtype=np.uint8)
    yield "mxfp4", blocks.nbytes, lambda: dq.mxfp4(blocks, exps)
    fp8 = rng.standard_normal((out, n_in)).astype(np.float32)
    block = rng.uniform(0.5, 2, (-(-out // 128), -(-n_in // 128))).astype(np.float32)
    yield "fp8_e4m3/block128 (from decoded f32)", fp8.nbytes // 4, lambda: dq.fp8_scaled(fp8, block, (128, 128))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=int, default=11008)
    ap.add_argument("--in", dest="n_in", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"| scheme ({args.out}×{args.n_in}) | seconds | packed MB | float32 MB | extra peak MB |")
    print("|---|---|---|---|---|")
    for name, packed_bytes, run in cases(args.out, args.n_in, rng):
        best = float("inf")
        for _ in range(args.repeat):
            tracemalloc.start()
            start = time.perf_counter()
            result = run()
            best = min(best, time.perf_counter() - start)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            extra = (peak - result.nbytes) / 1e6
            del result
        print(f"| {name} | {best:.2f} | {packed_bytes / 1e6:.1f} | {args.out * args.n_in * 4 / 1e6:.1f} | {extra:.1f} |")


if __name__ == "__main__":
    main()
