"""The quantized-weights table of docs/formats.md: what each scheme does to lambda_max and alpha.

One seeded float32 matrix (Gaussian bulk plus a heavy-tailed rank-8 signal) is
quantized in each scheme's own layout (round to nearest; bitsandbytes by its
own CPU backend), written to a safetensors file (with its config.json) and
analyzed by htsr from the file. Each row gives lambda_max and alpha

- read from the file (htsr dequantizes it),
- of the same dequantized matrix analyzed as a float array: must agree to 1e-10
  (asserted here),
- of the original float matrix before quantization.

Run from the repository root (needs torch, safetensors and bitsandbytes):

    python tests/data/make/make_quant_table.py
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("quant_packers", ROOT / "tests" / "quant_packers.py")
packers = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(packers)  # type: ignore[union-attr]

OUT, IN = 512, 384


def original() -> np.ndarray:
    rng = np.random.default_rng(2026)
    u, v = rng.standard_normal((OUT, 8)), rng.standard_normal((8, IN))
    signal = (u * (rng.pareto(1.5, 8) + 1.0)) @ v
    return ((rng.standard_normal((OUT, IN)) + 0.15 * signal) * 0.02).astype(np.float32)


def schemes(w: np.ndarray):
    """(label, tensors, config) for each scheme; tensors keyed without the layer prefix."""
    import torch

    tw = torch.from_numpy(w)
    rng = np.random.default_rng(0)
    out = []
    # FP8
    s = float(np.abs(w).max() / 448)
    out.append(("FP8 e4m3, per-tensor weight_scale",
                {"weight": (tw / s).to(torch.float8_e4m3fn), "weight_scale": torch.tensor(s)}, None))
    blocks = tw.reshape(OUT // 128, 128, IN // 128, 128).abs().amax(dim=(1, 3)) / 448
    full = blocks.repeat_interleave(128, 0).repeat_interleave(128, 1)
    out.append(("FP8 e4m3, 128×128 weight_scale_inv (DeepSeek-V3)",
                {"weight": (tw / full).to(torch.float8_e4m3fn), "weight_scale_inv": blocks},
                {"quant_method": "fp8", "weight_block_size": [128, 128]}))
    # GPTQ and AWQ
    for bits in (4, 3, 8):
        codes, scales, zeros = packers.quantize_groups(w, bits, 128, rng)
        tensors = packers.gptq_pack(codes, scales, zeros, bits)
        tensors["g_idx"] = (np.arange(IN) // 128).astype(np.int32)
        out.append((f"GPTQ {bits}-bit, group 128", tensors, {"quant_method": "gptq", "bits": bits, "group_size": 128}))
    codes, scales, zeros = packers.quantize_groups(w, 4, 128, rng)
    out.append(("AWQ 4-bit, group 128 (GEMM)", {"qweight": packers.awq_pack(codes.T), "qzeros": packers.awq_pack(zeros),
                                                "scales": scales}, {"quant_method": "awq"}))
    # bitsandbytes
    import bitsandbytes.functional as F

    cb, scb, _ = F.int8_vectorwise_quant(tw.half())
    out.append(("bitsandbytes int8 (SCB)", {"weight": cb, "SCB": scb}, None))
    for qt in ("nf4", "fp4"):
        q, state = F.quantize_4bit(tw, quant_type=qt, blocksize=64, compress_statistics=True)
        t = {"weight": q} | {f"weight.{k}": v for k, v in state.as_dict(packed=True).items()}
        out.append((f"bitsandbytes {qt}, nested absmax", t, None))
    # compressed-tensors pack-quantized int4 (symmetric), MLX, MXFP4
    g = w.reshape(OUT, IN // 128, 128)
    scale = np.abs(g).max(-1) / 7
    q = np.clip(np.round(g / scale[..., None]), -8, 7).reshape(OUT, IN).astype(np.int64)
    out.append(("compressed-tensors int4, group 128", {"weight_packed": packers.pack_bits_le(q + 8, 4),
                                                       "weight_scale": scale.astype(np.float32),
                                                       "weight_shape": np.array([OUT, IN])},
                {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4}}}}))
    g = w.reshape(OUT, IN // 64, 64)
    lo, hi = g.min(-1), g.max(-1)
    sc = (hi - lo) / 15
    codes = np.clip(np.round((g - lo[..., None]) / sc[..., None]), 0, 15).reshape(OUT, IN).astype(np.int64)
    out.append(("MLX affine 4-bit, group 64", {"weight": packers.pack_bits_le(codes, 4).view(np.uint32),
                                               "scales": sc.astype(np.float16), "biases": lo.astype(np.float16)},
                {"quantization": {"bits": 4, "group_size": 64}}))
    blocks_, scales_, _ = packers.mxfp4_pack(w)
    out.append(("MXFP4 (gpt-oss)", {"_blocks": blocks_, "_scales": scales_}, None))
    return out


def main() -> None:
    import torch
    from safetensors.torch import save_file

    import htsr

    w = original()
    base = htsr.analyze({"w": w.astype(np.float64)}).details.iloc[0]
    lines = ["| scheme | storage | lambda_max (file) | alpha (file) | max diff vs dequantized array "
             "| lambda_max (original) | alpha (original) |",
             "|---|---|---|---|---|---|---|"]
    for label, tensors, config in schemes(w):
        with tempfile.TemporaryDirectory() as tmp:
            prefix = "layer" if "_blocks" in tensors else "layer."
            sd = {prefix + k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))).contiguous()
                  for k, v in tensors.items()}
            save_file(sd, f"{tmp}/model.safetensors")
            if config is not None:
                key = "quantization" if "quantization" in config else "quantization_config"
                (Path(tmp) / "config.json").write_text(json.dumps({key: config.get(key, config)}))
            report = htsr.analyze(tmp)
            row = report.details.iloc[0]
            from htsr.sources import open_source

            deq = next(t for t in open_source(tmp).tensors if t.storage).load()
            again = htsr.analyze({"w": np.asarray(deq, dtype=np.float64)}).details.iloc[0]
            diff = max(abs(row["lambda_max"] - again["lambda_max"]) / again["lambda_max"],
                       abs(row["alpha"] - again["alpha"]))
            assert diff < 1e-10, (label, diff)
            lines.append(f"| {label} | `{row['storage']}` | {row['lambda_max']:.6g} | {row['alpha']:.4f} | {diff:.1e} "
                         f"| {base['lambda_max']:.6g} | {base['alpha']:.4f} |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
