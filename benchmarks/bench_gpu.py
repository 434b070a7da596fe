"""GPU next to CPU on one machine: MiniLM from its safetensors file, and a Llama-shaped 4096-hidden block stack.

Usage::

    python benchmarks/bench_gpu.py [--minilm PATH] [--blocks 4] [--hidden 4096] [--ffn 11008] [--repeat 3]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minilm", type=Path, default=None, help="a MiniLM safetensors file")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=11008)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from htsr.accel import cuda_available

    cuda = cuda_available()
    banner("GPU benchmark")
    if cuda:
        import torch

        print(f"# device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    else:
        print("# no CUDA device: CPU rows only")
    if args.minilm is not None and args.minilm.exists():
        compare(f"MiniLM {args.minilm.name}", args.minilm, args.repeat, cuda)
    t0 = time.perf_counter()
    sd = llama_stack(args.blocks, args.hidden, args.ffn)
    print(f"# built {len(sd)} matrices ({args.blocks} blocks, hidden {args.hidden}, ffn {args.ffn}) "
          f"in {time.perf_counter() - t0:.1f} s")
    compare(f"Llama-shaped {args.blocks}x7 matrices", sd, args.repeat, cuda)


if __name__ == "__main__":
    main()
