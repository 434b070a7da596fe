"""Randomization on a heavy-tailed VGG-11 (scaled down) gives exactly the golden numbers of the same seed.

The golden file (``tests/data/trap_golden_vgg11.json``, written by
``tests/data/make/make_trap_golden.py``) is htsr's own output: the ``randomize``
columns of every row, and every trap with its eigenvalue, located entries and
components. Speed work on the randomized ESD and the trap search must keep
them bit for bit.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import DATA, load_script

pytest.importorskip("torch")

GOLDEN = DATA / "trap_golden_vgg11.json"


def same(a, b) -> bool:
    """Exact equality, NaN equal to NaN, recursively through lists and dicts.

    A missing value is missing however the table writes it (None or NaN: the typed trap table writes None
    for a row that is not a slice, the frame before it NaN)."""
    def missing(v: object) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    if missing(a) or missing(b):
        return missing(a) and missing(b)
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("beside", [False, True])
def test_randomized_columns_and_traps_match_the_golden_file(beside, monkeypatch):
    """``beside``: every layer computes its own ESD on a helper thread beside its shuffle (as the
    engine does for large layers only), which must not change a bit."""
    if beside:
        from htsr import engine

        monkeypatch.setattr(engine, "BESIDE_MIN_ELEMENTS", 1)
    make = load_script(DATA / "make" / "make_trap_golden.py", "make_trap_golden")
    got = json.loads(json.dumps(make.tables(), allow_nan=True))  # the same float → JSON → float round trip
    want = json.loads(GOLDEN.read_text())
    assert len(want["native_traps"]) > 50  # the model is heavy-tailed enough to have many traps
    for part in ("native", "compat", "native_traps"):
        assert len(got[part]) == len(want[part]), part
        for g, w in zip(got[part], want[part]):
            assert same(g, w), (part, g, w)


def test_same():
    assert same([1.0, float("nan")], [1.0, float("nan")])
    assert not same([1.0], [1.0 + 1e-16 * 8])
    assert not same({"a": 1}, {"a": 2})
