"""GPU next to CPU on one machine: MiniLM from its safetensors file, and a Llama-shaped 4096-hidden block stack.

Usage::

    python benchmarks/bench_gpu.py [--minilm PATH] [--blocks 4] [--hidden 4096] [--ffn 11008] [--repeat 3]
    python benchmarks/bench_gpu.py --llama7b [--cpu-blocks 2]

``--llama7b``: Llama-2-7B's 224 matrices (32 blocks of q, k, v, o 4096², gate, up
11008×4096, down 4096×11008), float32 Gaussian, ~26 GB of host memory: one GPU run of
all of them, the CPU (all cores) on the first ``--cpu-blocks`` blocks only, their alphas
compared row by row (target 1e-10), and a projection to Llama-2-70B (80 blocks of
hidden 8192, ffn 28672, k/v 1024×8192) by the blocks' Gram + eigensolver flop ratio.

Each block holds q, k, v, o (hidden×hidden) and gate, up (ffn×hidden), down
(hidden×ffn), float32, Gaussian entries (seeded). Prints the best wall time of
``--repeat`` runs for ``device='cuda'`` (float64) and ``device='cpu'`` (all cores), and the largest relative alpha difference of
each GPU run from the CPU's. Without CUDA only the CPU rows are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import banner, best_of  # noqa: E402


def llama_stack(blocks: int, hidden: int, ffn: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    sd = {}
    for b in range(blocks):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[f"layers.{b}.self_attn.{name}.weight"] = rng.standard_normal((hidden, hidden), dtype=np.float32)
        sd[f"layers.{b}.mlp.gate_proj.weight"] = rng.standard_normal((ffn, hidden), dtype=np.float32)
        sd[f"layers.{b}.mlp.up_proj.weight"] = rng.standard_normal((ffn, hidden), dtype=np.float32)
        sd[f"layers.{b}.mlp.down_proj.weight"] = rng.standard_normal((hidden, ffn), dtype=np.float32)
    return sd


def compare(label: str, model, repeat: int, cuda: bool) -> None:
    import htsr

    t0 = time.perf_counter()
    cpu_alpha = htsr.analyze(model, device="cpu").details["alpha"].to_numpy()
    first = time.perf_counter() - t0
    cpu = best_of(lambda: htsr.analyze(model, device="cpu"), max(1, repeat - 1), warmup=0)
    print(f"{label}: cpu (all cores) {cpu} [first run {first:.2f} s]")
    if not cuda:
        return
    alpha = htsr.analyze(model, device="cuda").details["alpha"].to_numpy()  # also the warm-up
    gpu = best_of(lambda: htsr.analyze(model, device="cuda"), repeat, warmup=0)
    err = float(np.nanmax(np.abs(alpha - cpu_alpha) / np.abs(cpu_alpha)))
    print(f"{label}: cuda {gpu}; speed-up vs cpu {cpu.wall / gpu.wall:.1f}x; max alpha rel. diff from cpu {err:.1e}")


def block_flops(hidden: int, ffn: int, kv: int) -> float:
    """Gram (N·M²) + eigensolver (M³) flops of one block's seven matrices, up to a common factor."""
    shapes = [(hidden, hidden)] * 2 + [(kv, hidden)] * 2 + [(ffn, hidden)] * 2 + [(hidden, ffn)]
    return float(sum(max(s) * min(s) ** 2 + min(s) ** 3 for s in shapes))


def llama7b(cpu_blocks: int, cuda: bool) -> None:
    """All 224 Llama-2-7B-shaped matrices on the GPU; the CPU on the first ``cpu_blocks`` blocks."""
    import htsr

    t0 = time.perf_counter()
    sd = llama_stack(32, 4096, 11008)
    print(f"# built {len(sd)} matrices (Llama-2-7B shapes) in {time.perf_counter() - t0:.1f} s", flush=True)
    part = dict(list(sd.items())[:7 * cpu_blocks])
    t0 = time.perf_counter()
    cpu_alpha = htsr.analyze(part, device="cpu").details["alpha"].to_numpy()
    cpu = time.perf_counter() - t0
    print(f"Llama-2-7B first {cpu_blocks} blocks: cpu (all cores) {cpu:.1f} s "
          f"(projected to 32 blocks: {cpu * 32 / cpu_blocks:.0f} s)", flush=True)
    if not cuda:
        return
    htsr.analyze(dict(list(sd.items())[:7]), device="cuda")  # warm-up: one block
    t0 = time.perf_counter()
    alpha = htsr.analyze(sd, device="cuda").details["alpha"].to_numpy()
    gpu = time.perf_counter() - t0
    err = float(np.nanmax(np.abs(alpha[:cpu_alpha.size] - cpu_alpha) / np.abs(cpu_alpha)))
    ratio = 80 * block_flops(8192, 28672, 1024) / (32 * block_flops(4096, 11008, 4096))
    print(f"Llama-2-7B, 224 matrices: cuda {gpu:.1f} s; max alpha rel. diff from cpu on the first {cpu_blocks} "
          f"blocks {err:.1e} (target 1e-10); projected Llama-2-70B blocks (flop ratio {ratio:.1f}): "
          f"{gpu * ratio / 60:.1f} min on this GPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minilm", type=Path, default=None, help="a MiniLM safetensors file")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=11008)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--llama7b", action="store_true", help="the 224 matrices of Llama-2-7B's shapes")
    ap.add_argument("--cpu-blocks", type=int, default=2, help="with --llama7b: blocks the CPU also analyzes")
    args = ap.parse_args()

    from htsr.accel import cuda_available

    cuda = cuda_available()
    banner("GPU benchmark")
    if cuda:
        import torch

        print(f"# device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    else:
        print("# no CUDA device: CPU rows only")
    if args.llama7b:
        llama7b(args.cpu_blocks, cuda)
        return
    if args.minilm is not None and args.minilm.exists():
        compare(f"MiniLM {args.minilm.name}", args.minilm, args.repeat, cuda)
    t0 = time.perf_counter()
    sd = llama_stack(args.blocks, args.hidden, args.ffn)
    print(f"# built {len(sd)} matrices ({args.blocks} blocks, hidden {args.hidden}, ffn {args.ffn}) "
          f"in {time.perf_counter() - t0:.1f} s")
    compare(f"Llama-shaped {args.blocks}x7 matrices", sd, args.repeat, cuda)


if __name__ == "__main__":
    main()
