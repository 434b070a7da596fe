"""Over-training study: which weight-only signals move before the test-loss minimum?

An MLP (64→256→256→256→10) over-fits 300 training images of scikit-learn's
digits, for every combination of seed × optimizer (SGD with momentum, Adam) ×
label noise (none, 20 %), plus a control group (plain SGD without momentum,
no noise) that trains more gently. Every epoch: train and test loss. Every
``--every`` epochs up to epoch 60, then every 10: :class:`htsr.Monitor` with
``randomize=True`` (alpha per layer, num_traps, rand_mean_spike, relative
weight change ‖W − W0‖/‖W0‖). The test loss is given to the monitor as its
validation loss. A run "over-fits" when its final test loss is more than 10 %
above its minimum.

Run (about 6 minutes on two shared cores)::

    python examples/overtraining/study.py --out study-out
    python examples/overtraining/study.py --quick --out /some/tmp   # one seed, few epochs

Outputs under ``--out``: ``runs/<run>.jsonl`` (the monitor histories),
``epochs.csv`` (loss per epoch), ``summary.json`` (the numbers quoted in
docs/overtraining.md) and ``fig_*.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

import htsr

NOISE = 0.2


def load_digits_split(n_train: int, seed: int):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(1000 + seed)
    order = rng.permutation(len(y))
    tr, te = order[:n_train], order[n_train:]
    return X[tr], y[tr], X[te], y[te]


def noisy(y: np.ndarray, frac: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(2000 + seed)
    y = y.copy()
    idx = rng.choice(len(y), round(frac * len(y)), replace=False)
    y[idx] = (y[idx] + rng.integers(1, 10, len(idx))) % 10  # always a different class
    return y


def make_model(seed: int, width: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, width), torch.nn.ReLU(),
        torch.nn.Linear(width, width), torch.nn.ReLU(),
        torch.nn.Linear(width, width), torch.nn.ReLU(),
        torch.nn.Linear(width, 10),
    )


def run_one(seed: int, opt_name: str, noise: float, args, outdir: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    Xtr, ytr, Xte, yte = load_digits_split(args.n_train, seed)
    if noise:
        ytr = noisy(ytr, noise, seed)
    Xtr_t, ytr_t = torch.from_numpy(Xtr), torch.from_numpy(ytr).long()
    Xte_t, yte_t = torch.from_numpy(Xte), torch.from_numpy(yte).long()
    model = make_model(seed, args.width)
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    elif opt_name == "sgdplain":
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    name = f"{opt_name}_noise{int(noise * 100)}_seed{seed}"
    path = outdir / "runs" / f"{name}.jsonl"
    for p in (path, path.with_name(path.name + ".w0.npz")):
        if p.exists():
            p.unlink()
    monitor = htsr.Monitor(every=1, randomize=True, path=path, seed=seed, workers=1)  # called on schedule below
    gen = torch.Generator().manual_seed(seed)
    epochs = []
    t_train = t_mon = 0.0
    for epoch in range(args.epochs + 1):
        t0 = time.perf_counter()
        if epoch > 0:
            model.train()
            perm = torch.randperm(len(ytr_t), generator=gen)
            for i in range(0, len(perm), args.batch):
                b = perm[i:i + args.batch]
                opt.zero_grad()
                loss = loss_fn(model(Xtr_t[b]), ytr_t[b])
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            train_loss = float(loss_fn(model(Xtr_t), ytr_t))
            out = model(Xte_t)
            test_loss = float(loss_fn(out, yte_t))
            test_acc = float((out.argmax(1) == yte_t).float().mean())
        t1 = time.perf_counter()
        if epoch % (args.every if epoch <= args.dense_until else 10) == 0 or epoch == args.epochs:
            monitor.step(model, epoch, val_loss=test_loss)
        t_train += t1 - t0
        t_mon += time.perf_counter() - t1
        epochs.append({"run": name, "optimizer": opt_name, "noise": noise, "seed": seed, "epoch": epoch,
                       "train_loss": train_loss, "test_loss": test_loss, "test_acc": test_acc})
    return {"name": name, "epochs": epochs, "monitor": monitor, "t_train": t_train, "t_monitor": t_mon}


# ---------------------------------------------------------------- analysis
def first(xs, cond):
    for x in xs:
        if cond(x):
            return x
    return None


def analyze_run(run: dict, args) -> dict:
    ep = run["epochs"]
    test = np.array([e["test_loss"] for e in ep])
    e_min = int(np.argmin(test))
    final = float(test[-1])
    overfit = bool(final > 1.10 * test[e_min] and e_min < len(test) - 1)
    frame = run["monitor"].to_frame()
    steps = sorted(frame["step"].unique())
    per_step = frame.groupby("step").agg(mean_alpha=("alpha", "mean"), rel_change=("rel_change", "mean"),
                                         traps=("num_traps", "sum"), mean_spike=("rand_mean_spike", "sum"))
    # how much of each signal's total movement (start → end) happened by the test-loss minimum
    s_at_min = max(s for s in steps if s <= e_min)

    def frac(col: str) -> float:
        v0, vmin, vend = per_step[col].iloc[0], per_step.loc[s_at_min, col], per_step[col].iloc[-1]
        return float((vmin - v0) / (vend - v0)) if vend != v0 else float("nan")

    hist = run["monitor"].history
    flag_steps = {f: first([r["step"] for r in hist if f in r.get("flags", [])], lambda s: True)
                  for f in htsr.monitor.FLAG_NAMES}
    # the plain early-stopping rule on the same evaluations: test loss rose at `patience` evaluations in a row
    vals = [r["val_loss"] for r in hist]
    es = None
    for i in range(2, len(vals)):
        if vals[i - 2] < vals[i - 1] < vals[i]:
            es = hist[i]["step"]
            break
    layer_alpha_end = frame[frame["step"] == steps[-1]].set_index("layer")["alpha"].to_dict()
    hidden = list(dict.fromkeys(frame["layer"]))[:-1]  # every layer but the output layer
    low = frame[frame["layer"].isin(hidden) & (frame["alpha"] < 2)]
    first_hidden_below_2 = int(low["step"].min()) if len(low) else None
    spikes = per_step["mean_spike"]
    first_spike = next((int(s) for s, v in spikes.items() if v > 0), None)
    layer_frac = {}
    for layer, g in frame.groupby("layer", sort=False):
        a = g.set_index("step")["alpha"]
        layer_frac[layer] = float((a.loc[s_at_min] - a.iloc[0]) / (a.iloc[-1] - a.iloc[0])) if a.iloc[-1] != a.iloc[0] else float("nan")
    layer_alpha_0 = frame[frame["step"] == steps[0]].set_index("layer")["alpha"].to_dict()
    layer_alpha_min = frame[frame["step"] == s_at_min].set_index("layer")["alpha"].to_dict()
    return {
        "run": run["name"], "overfit": overfit, "epoch_min": e_min, "test_min": float(test[e_min]), "test_final": final,
        "alpha_0": float(per_step["mean_alpha"].iloc[0]), "alpha_at_min": float(per_step.loc[s_at_min, "mean_alpha"]),
        "alpha_final": float(per_step["mean_alpha"].iloc[-1]),
        "alpha_min_value": float(per_step["mean_alpha"].min()),
        "rel_change_at_min": float(per_step.loc[s_at_min, "rel_change"]),
        "rel_change_final": float(per_step["rel_change"].iloc[-1]),
        "frac_alpha_move_by_min": frac("mean_alpha"), "frac_rel_change_by_min": frac("rel_change"),
        "traps_final": int(per_step["traps"].iloc[-1]), "traps_max": int(per_step["traps"].max()),
        "mean_spike_final": int(per_step["mean_spike"].iloc[-1]),
        "first_flag": flag_steps, "first_early_stop": es, "first_mean_spike": first_spike,
        "first_hidden_alpha_below_2": first_hidden_below_2,
        "frac_layer_alpha_by_min": layer_frac,
        "layer_alpha_0": layer_alpha_0, "layer_alpha_at_min": layer_alpha_min, "layer_alpha_final": layer_alpha_end,
        "t_train": run["t_train"], "t_monitor": run["t_monitor"],
    }


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def summarize(results: list[dict]) -> dict:
    out: dict = {"runs": len(results), "overfit_runs": sum(r["overfit"] for r in results)}
    groups: dict = {}
    for r in results:
        key = r["run"].rsplit("_seed", 1)[0]
        groups.setdefault(key, []).append(r)
    out["groups"] = {}
    for key, rs in sorted(groups.items()):
        g: dict = {"runs": len(rs), "overfit": sum(r["overfit"] for r in rs),
                   "epoch_min_median": float(np.median([r["epoch_min"] for r in rs]))}
        for col in ("test_min", "test_final", "alpha_0", "alpha_at_min", "alpha_final", "rel_change_at_min",
                    "rel_change_final", "frac_alpha_move_by_min", "frac_rel_change_by_min", "traps_final",
                    "mean_spike_final"):
            g[col] = float(np.nanmean([r[col] for r in rs]))
        g["frac_layer_alpha_by_min"] = {
            layer: round(float(np.nanmedian([r["frac_layer_alpha_by_min"][layer] for r in rs])), 3)
            for layer in rs[0]["frac_layer_alpha_by_min"]}
        spiked = [r for r in rs if r["first_mean_spike"] is not None]
        g["mean_spike_runs"] = len(spiked)
        g["mean_spike_first_before_min"] = sum(1 for r in spiked if r["first_mean_spike"] <= r["epoch_min"])
        g["hidden_alpha_below_2_lag"] = [None if r["first_hidden_alpha_below_2"] is None
                                          else r["first_hidden_alpha_below_2"] - r["epoch_min"] for r in rs]
        g["layer_alpha"] = {
            layer: [round(float(np.mean([r[k][layer] for r in rs])), 3)
                    for k in ("layer_alpha_0", "layer_alpha_at_min", "layer_alpha_final")]
            for layer in rs[0]["layer_alpha_0"]}
        out["groups"][key] = g
    flags = list(htsr.monitor.FLAG_NAMES) + ["early_stop_rule"]
    rates: dict = {}
    for f in flags:
        def fired(r, f=f):
            return r["first_early_stop"] if f == "early_stop_rule" else r["first_flag"][f]
        over = [r for r in results if r["overfit"]]
        clean = [r for r in results if not r["overfit"]]
        lags = [fired(r) - r["epoch_min"] for r in over if fired(r) is not None]
        rates[f] = {
            "fired_on_overfit": f"{sum(fired(r) is not None for r in over)}/{len(over)}",
            "fired_by_min": sum(1 for r in over if fired(r) is not None and fired(r) <= r["epoch_min"]),
            "median_lag_epochs": float(np.median(lags)) if lags else None,
            "false_flags_on_not_overfit": f"{sum(fired(r) is not None for r in clean)}/{len(clean)}",
            # a flag raised while the test loss was still to reach its minimum is premature
            "premature_all_runs": f"{sum(1 for r in results if fired(r) is not None and fired(r) < r['epoch_min'])}"
                                  f"/{len(results)}",
        }
    out["flags"] = rates
    both = [r for r in results if r["first_flag"]["alpha_falling_val_rising"] is not None and r["first_early_stop"] is not None]
    out["alpha_flag_vs_early_stop_rule"] = {
        "same_epoch": sum(r["first_flag"]["alpha_falling_val_rising"] == r["first_early_stop"] for r in both),
        "later": sum(r["first_flag"]["alpha_falling_val_rising"] > r["first_early_stop"] for r in both),
        "earlier": sum(r["first_flag"]["alpha_falling_val_rising"] < r["first_early_stop"] for r in both),
    }
    out["spearman_final_vs_test_final"] = {
        "mean_alpha": spearman([r["alpha_final"] for r in results], [r["test_final"] for r in results]),
        "rel_change": spearman([r["rel_change_final"] for r in results], [r["test_final"] for r in results]),
    }
    out["spearman_at_min_vs_test_min"] = {
        "mean_alpha": spearman([r["alpha_at_min"] for r in results], [r["test_min"] for r in results]),
        "rel_change": spearman([r["rel_change_at_min"] for r in results], [r["test_min"] for r in results]),
    }
    t_train = sum(r["t_train"] for r in results)
    t_mon = sum(r["t_monitor"] for r in results)
    out["time_s"] = {"train_and_eval": round(t_train, 1), "monitor": round(t_mon, 1)}
    return out


def figures(runs: list[dict], outdir: Path) -> list[Path]:
    from matplotlib.figure import Figure

    paths = []
    keys = sorted({r["name"].rsplit("_seed", 1)[0] for r in runs})
    fig = Figure(figsize=(11, 2.4 * len(keys)), layout="constrained")
    axes = fig.subplots(len(keys), 3, squeeze=False)
    for row, key in zip(axes, keys):
        for r in runs:
            if not r["name"].startswith(key + "_"):
                continue
            ep = [e["epoch"] for e in r["epochs"]]
            test = [e["test_loss"] for e in r["epochs"]]
            row[0].plot(ep, test, lw=0.8)
            row[0].plot(ep, [e["train_loss"] for e in r["epochs"]], lw=0.8, ls=":", color="gray")
            e_min = int(np.argmin(test))
            hist = r["monitor"].history
            s = [h["step"] for h in hist]
            row[1].plot(s, [h["mean_alpha"] for h in hist], lw=0.8)
            row[1].axvline(e_min, lw=0.5, color="gray")
            f = r["monitor"].to_frame().groupby("step")["rel_change"].mean()
            row[2].plot(f.index, f.values, lw=0.8)
            row[2].axvline(e_min, lw=0.5, color="gray")
        row[0].set_ylabel(key.replace("_", " "), fontsize=8)
        row[0].set_title("test loss (solid), train loss (dotted)", fontsize=8)
        row[1].set_title("mean alpha (grey line: test-loss minimum)", fontsize=8)
        row[1].axhline(2, color="r", ls="--", lw=0.6)
        row[2].set_title("mean ‖W−W0‖/‖W0‖", fontsize=8)
    for a in axes[-1]:
        a.set_xlabel("epoch")
    p = outdir / "fig_curves.png"
    fig.savefig(p, dpi=60)
    paths.append(p)
    # per-layer alpha of one run per group
    fig = Figure(figsize=(11, 2.6), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        r = next(r for r in runs if r["name"].startswith(key + "_"))
        fr = r["monitor"].to_frame()
        for layer, g in fr.groupby("layer", sort=False):
            ax.plot(g["step"], g["alpha"], lw=0.8, label=f"layer {layer}")
        ax.axvline(int(np.argmin([e["test_loss"] for e in r["epochs"]])), lw=0.5, color="gray")
        ax.set_title(r["name"], fontsize=8)
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("alpha")
    axes[0].legend(fontsize=6)
    p = outdir / "fig_layers.png"
    fig.savefig(p, dpi=70)
    paths.append(p)
    return paths


def _clean(v):
    """JSON-safe: NaN → None, numpy scalars → Python."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="overtraining-out")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--every", type=int, default=2, help="monitor interval (epochs) up to --dense-until, then 10")
    ap.add_argument("--dense-until", type=int, default=60)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="one seed, SGD and Adam without noise, 12 epochs")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.every, args.width = 1, 12, 3, 64
    outdir = Path(args.out)
    (outdir / "runs").mkdir(parents=True, exist_ok=True)
    settings = [(s, o, n) for s in range(args.seeds) for o in ("sgd", "adam") for n in ((0.0,) if args.quick else (0.0, NOISE))]
    if not args.quick:
        settings += [(s, "sgdplain", 0.0) for s in range(args.seeds)]  # the gentler control group
    runs, results = [], []
    start = time.perf_counter()
    for seed, opt, noise in settings:
        r = run_one(seed, opt, noise, args, outdir)
        runs.append(r)
        results.append(analyze_run(r, args))
        print(f"{r['name']}: min test loss {results[-1]['test_min']:.3f} at epoch {results[-1]['epoch_min']}, "
              f"final {results[-1]['test_final']:.3f}, mean alpha {results[-1]['alpha_0']:.2f}→"
              f"{results[-1]['alpha_final']:.2f}  ({time.perf_counter() - start:.0f}s)", flush=True)
    import pandas as pd

    pd.DataFrame([e for r in runs for e in r["epochs"]]).to_csv(outdir / "epochs.csv", index=False)
    summary = summarize(results)
    summary["per_run"] = [{k: v for k, v in r.items() if not k.startswith("layer_alpha")} for r in results]
    summary["layer_alpha"] = {r["run"]: {"start": r["layer_alpha_0"], "final": r["layer_alpha_final"]} for r in results}
    summary["args"] = {k: v for k, v in vars(args).items() if k != "out"}
    (outdir / "summary.json").write_text(json.dumps(_clean(summary), indent=1))
    for p in figures(runs, outdir):
        print("wrote", p)
    print(json.dumps({k: _clean(summary[k]) for k in ("groups", "flags", "alpha_flag_vs_early_stop_rule",
                                                      "spearman_final_vs_test_final",
                                              "spearman_at_min_vs_test_min", "time_s")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
