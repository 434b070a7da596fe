"""Write the reference's tables for analyze() options on small seeded models.

Run with an interpreter that has weightwatcher==0.7.7, powerlaw<2 and torch (never a
project dependency), from the repository root:

    $WW_PYTHON tests/data/make/make_options_golden.py

Writes tests/data/options_ww077.csv (one row per (case, model, layer); the columns of all
cases together) and tests/data/options_ww077_columns.json (each case's options and its
column list in the reference's order). Cases whose reference call raises are recorded
with the exception text instead of rows.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from options_models import MODELS, build  # noqa: E402

CASES = {
    "powerlaw": dict(pl_package="powerlaw"),
    "powerlaw_force": dict(pl_package="powerlaw", xmax="force"),
    "xmax_clip2": dict(xmax=-2),
    "powerlaw_xmax_clip3": dict(pl_package="powerlaw", xmax=-3),
    "tpl": dict(fit="TPL", pl_package="powerlaw"),
    "tpl_force": dict(fit="TPL", pl_package="powerlaw", xmax="force"),
    "e_tpl": dict(fit="E_TPL", pl_package="powerlaw"),
    "xmin_peak": dict(fix_fingers="xmin_peak", pl_package="powerlaw"),
    "xmin_peak_max": dict(fix_fingers="xmin_peak", pl_package="powerlaw", xmin_max=1.0),
    "xmin_peak_ww": dict(fix_fingers="xmin_peak"),
    "clip_xmax": dict(fix_fingers="clip_xmax"),
    "clip_xmax_thresh": dict(fix_fingers="clip_xmax", finger_thresh=0.3),
    "clip_xmax_powerlaw": dict(fix_fingers="clip_xmax", pl_package="powerlaw"),
    "clip_xmax_tpl": dict(fix_fingers="clip_xmax", fit="TPL", pl_package="powerlaw"),
    "detx": dict(detX=True),
    "erg": dict(ERG=True),
    "glorot_fix": dict(glorot_fix=True),
    "svd_accurate": dict(svd_method="accurate"),
    "deltas": dict(deltas=True),
    "inverse": dict(inverse=True),
    "vectors": dict(vectors=True),
    "vectors_inverse_refused": dict(vectors=True, inverse=True),
    "intra_direct": dict(intra=True, sparsify=False),
    "intra_sparsify": dict(intra=True),  # the reference's S is unseeded: only the deterministic columns compare
    "intra_randomize_refused": dict(intra=True, randomize=True),
    "stacked": dict(stacked=True),
    "stacked_two": dict(stacked=True, layers=[3, 5, 6]),
    "tpl_ww_refused": dict(fit="TPL"),
    "force_ww_refused": dict(xmax="force"),
    "etpl_clip_refused": dict(fit="E_TPL", fix_fingers="clip_xmax", pl_package="powerlaw"),
    "fft_broken": dict(fft=True),
    "channels_broken": dict(channels="first"),
}


# the slow truncated-power-law cases run on the first two models only
HEAVY = ("tpl", "tpl_force", "e_tpl", "clip_xmax_tpl")


def main() -> None:
    import pandas as pd
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.CRITICAL + 1)
    frames, meta = [], {}
    for case, opts in CASES.items():
        models = MODELS[:2] if case in HEAVY else MODELS
        meta[case] = {"options": opts, "models": list(models)}
        for model in models:
            try:
                details = ww.WeightWatcher(model=build(model)).analyze(**opts)
            except Exception as err:  # the reference refuses these options
                meta[case]["raises"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
                break
            meta[case]["columns"] = list(details.columns)
            details.insert(0, "model", model)
            details.insert(0, "case", case)
            frames.append(details)
        print(case, "done", file=sys.stderr)
    out = HERE.parent
    pd.concat(frames, ignore_index=True).to_csv(out / "options_ww077.csv", index=False, float_format="%.17g")
    (out / "options_ww077_columns.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
