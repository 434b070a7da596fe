"""Outlier dimensions: traps of different layers that share an index, told apart from isolated traps."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import htsr
from htsr.spectral.trap_groups import chance_groups, group_traps, principal_entries


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


def trap(name, shape, *entries, kind=None, slice_id=None, components=None):
    t = {"longname": name, "shape": shape, "entries": list(entries), "slice_id": slice_id}
    if kind is not None:
        t["kind"] = kind
    if components is not None:
        t["components"] = components
    return t


# ------------------------------------------------------------------------------------ the grouping function


def test_row_of_one_layer_meets_column_of_another_of_the_same_length():
    g = group_traps([trap("w1", (384, 1536), (99, 856, 7.9)),
                     trap("pos", (512, 384), (0, 99, -1.9)),
                     trap("w2", (384, 1536), (99, 607, 4.4))])
    assert len(g.groups) == 1
    grp = g.groups[0]
    assert (grp.axis, grp.index, grp.size, grp.num_layers, grp.num_traps) == ("row+col", 99, 384, 3, 3)
    assert grp.layers == ("w1", "pos", "w2") and grp.axes == ("row", "col", "row")
    assert grp.max_value == pytest.approx(7.9)
    assert g.kinds == ("shared_dim",) * 3 and g.group_of == (0, 0, 0)


def test_rows_only_and_columns_only_groups_name_their_axis():
    rows = group_traps([trap("a", (64, 32), (5, 1, 3.0)), trap("b", (64, 16), (5, 2, 2.0))])
    cols = group_traps([trap("a", (32, 64), (1, 5, 3.0)), trap("b", (16, 64), (2, 5, 2.0))])
    assert [(x.axis, x.index, x.size) for x in rows.groups] == [("row", 5, 64)]
    assert [(x.axis, x.index, x.size) for x in cols.groups] == [("col", 5, 64)]


def test_same_index_on_axes_of_different_length_does_not_group():
    g = group_traps([trap("a", (128, 300), (5, 7, 3.0)), trap("b", (256, 301), (5, 9, 3.0)),
                     trap("c", (200, 128), (11, 7, 3.0))])  # a's col 7 (300) vs c's col 7 (128): no
    assert g.groups == () and g.kinds == ("isolated",) * 3 and g.group_of == (None,) * 3


def test_one_layer_twice_is_no_group():
    g = group_traps([trap("a", (64, 64), (5, 1, 3.0)), trap("a", (64, 64), (5, 9, 2.0)),
                     trap("a", (64, 64), (9, 5, 2.0), slice_id=3)])  # another kernel position of a
    assert g.groups == () and g.num_isolated == 3


def test_two_traps_of_one_layer_count_once_among_the_layers():
    g = group_traps([trap("a", (64, 32), (5, 1, 3.0)), trap("a", (64, 32), (5, 9, 6.0)),
                     trap("b", (64, 32), (5, 4, 1.0))])
    assert g.groups[0].num_layers == 2 and g.groups[0].num_traps == 3 and g.groups[0].max_value == 6.0


def test_mean_spikes_are_never_grouped():
    g = group_traps([trap("a", (64, 32), (5, 1, 3.0), kind="mean"), trap("b", (64, 32), (5, 4, 1.0))])
    assert g.groups == () and g.kinds == ("mean", "isolated")
    g = group_traps([trap("a", (64, 32), (5, 1, 3.0), kind="mean"), trap("b", (64, 32), (5, 4, 1.0)),
                     trap("c", (64, 32), (5, 2, 2.0))])
    assert g.kinds == ("mean", "shared_dim", "shared_dim") and g.groups[0].layers == ("b", "c")
    assert g.num_isolated == 0


def test_traps_without_shape_or_entries_are_isolated():
    g = group_traps([trap("a", None, (5, 1, 3.0)), trap("b", (64, 32)), trap("c", (64, 32), (5, 2, 2.0))])
    assert g.groups == () and g.kinds == ("isolated",) * 3


def test_malformed_entries_are_left_out_not_raised():
    g = group_traps([trap("a", (64, 32), (5, 1, float("nan")), ("x", 1, 2.0), (70, 1, 3.0)),  # nothing usable
                     trap("b", (64, 32), (5, 4, 1.0)), trap("c", (64, 32), (5, 2, 2.0)),
                     trap("d", (64, 32), (5, 3, 2.0), components=[1.0, 2.0])])  # components of the wrong length
    assert g.kinds == ("isolated", "shared_dim", "shared_dim", "shared_dim")
    assert g.groups[0].layers == ("b", "c", "d")


def test_more_layers_first_and_each_trap_in_one_group():
    traps = [trap("a", (64, 64), (5, 9, 3.0)), trap("b", (64, 64), (5, 40, 3.0)),
             trap("c", (64, 64), (40, 5, 3.0)), trap("d", (64, 64), (9, 33, 8.0)), trap("e", (64, 64), (33, 50, 1.0))]
    g = group_traps(traps)
    # index 5 reaches a, b, c; 9 reaches a and d, but a is taken; 33 reaches d and e
    assert [(x.index, x.layers) for x in g.groups] == [(5, ("a", "b", "c")), (33, ("d", "e"))]
    assert g.group_of == (0, 0, 0, 1, 1)


def test_principal_entries_split_mixed_spikes():
    # two equally large elements of one matrix: both spikes list both entries
    mixed = [trap("a", (64, 64), (3, 4, 9.0), (7, 8, -9.0), components=[6.0, 5.0]),
             trap("a", (64, 64), (7, 8, -9.0), (3, 4, 9.0), components=[6.1, 4.9])]
    assert principal_entries(mixed) == [(3, 4, 9.0), (7, 8, 9.0)]
    # other layers share row 3: only the first trap joins them, the second stays isolated
    g = group_traps(mixed + [trap("b", (64, 30), (3, 1, 2.0))])
    assert g.kinds == ("shared_dim", "isolated", "shared_dim")
    # in different matrices (slices) the same entry may be principal twice
    assert principal_entries([trap("a", (8, 8), (1, 1, 2.0), slice_id=0),
                              trap("a", (8, 8), (1, 1, 2.0), slice_id=1)]) == [(1, 1, 2.0)] * 2


def test_chance_matches_brute_force_enumeration():
    size, hits = 5, (2, 3, 1)
    for need in (1, 2, 3):
        total, count = 0.0, 0
        for sets in itertools.product(*(itertools.combinations(range(size), h) for h in hits)):
            total += sum(sum(i in s for s in sets) >= need for i in range(size))
            count += 1
        assert chance_groups(hits, size, need) == pytest.approx(total / count, rel=1e-12)
    assert chance_groups([1, 1], 384, 2) == pytest.approx(1 / 384)
    assert chance_groups([1, 1], 384, 3) == 0.0


# ------------------------------------------------------------------------------------ through htsr.analyze

IDX = 7  # the planted outlier dimension


def planted_model(seed: int, plant: bool = True) -> dict:
    """3 writers (128×384, row IDX) and 3 readers (384×128, column IDX), Gaussian; 2 isolated elements."""
    rng = np.random.default_rng(seed)
    model = {}
    for k in range(3):
        w = rng.standard_normal((128, 384))
        r = rng.standard_normal((384, 128))
        if plant:  # one large element per layer, at a random place along the outlier dimension
            w[IDX, 50 + 60 * k + int(rng.integers(0, 40))] = rng.uniform(30, 50) * rng.choice([-1, 1])
            r[20 + 70 * k + int(rng.integers(0, 40)), IDX] = rng.uniform(30, 50) * rng.choice([-1, 1])
        model[f"block{k}.out.weight"] = w
        model[f"block{k}.in.weight"] = r
    if plant:  # isolated: as large as the others (their spikes mix with the dimension's in the same matrix)
        model["block0.out.weight"][60, 300] = 40.0
        model["block2.in.weight"][250, 90] = -40.0
    return model


@pytest.mark.parametrize("seed", range(20))
def test_planted_outlier_dimension_and_isolated_elements(seed):
    report = htsr.analyze(planted_model(seed), randomize=True, seed=seed)
    groups, traps = report.trap_groups, report.traps
    assert len(groups) == 1
    g = groups.iloc[0]
    assert (g["axis"], g["index"], g["size"], g["num_layers"], g["num_traps"]) == ("row+col", IDX, 128, 6, 6)
    assert sorted(zip(g["layers"], g["axes"])) == sorted(
        [(f"block{k}.out", "row") for k in range(3)] + [(f"block{k}.in", "col") for k in range(3)])
    assert g["chance"] < 1e-6
    isolated = traps[traps["kind"] == "isolated"]
    assert sorted(isolated["longname"]) == ["block0.out", "block2.in"]
    assert traps["group"].isna().tolist() == (traps["kind"] == "isolated").tolist()
    assert (traps.loc[traps["kind"] == "shared_dim", "shared_index"] == IDX).all()
    assert report.summary["num_traps"] == 8
    assert (report.summary["num_outlier_dims"], report.summary["num_isolated_traps"]) == (1, 2)


@pytest.mark.parametrize("seed", range(3))
def test_clean_model_has_no_group(seed):
    report = htsr.analyze(planted_model(seed, plant=False), randomize=True, seed=seed)
    assert len(report.trap_groups) == 0 and list(report.trap_groups.columns)[:3] == ["axis", "index", "size"]
    assert (report.summary["num_outlier_dims"], report.summary["num_isolated_traps"]) == (0, report.summary["num_traps"])


def test_conv_channels_group_across_kernel_positions():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((64, 48, 3, 3)), rng.standard_normal((32, 64, 3, 3))
    a[5, 20, 1, 1] = 45.0  # out channel 5 of a …
    b[17, 5, 0, 2] = -45.0  # … is in channel 5 of b
    report = htsr.analyze({"a.weight": a, "b.weight": b}, randomize=True, seed=1)
    g = report.trap_groups
    assert len(g) == 1 and (g["axis"][0], g["index"][0], g["size"][0]) == ("row+col", 5, 64)
    assert list(g["axes"][0]) == ["row", "col"]
    assert g["max_value"][0] == pytest.approx(45.0 * np.sqrt(0.5))  # values of the analyzed (scaled) slices
    assert sorted(report.traps["slice_id"]) == [2, 4]


def test_json_has_trap_groups_and_kinds():
    doc = json.loads(htsr.analyze(planted_model(0), randomize=True, seed=0).to_json())
    assert [(g["index"], g["num_layers"]) for g in doc["trap_groups"]] == [(IDX, 6)]
    assert sorted(t["kind"] for t in doc["traps"]) == ["isolated"] * 2 + ["shared_dim"] * 6
    assert {t["group"] for t in doc["traps"]} == {0, None}


def test_without_randomize_no_summary_keys():
    report = htsr.analyze(planted_model(0))
    assert "num_outlier_dims" not in report.summary and len(report.trap_groups) == 0


# ------------------------------------------------------------------------------------ command line


def _cli(argv):
    import io

    from htsr import cli

    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def planted_files(tmp_path_factory):
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("groups")
    both = planted_model(0)
    shared_only = planted_model(0)
    shared_only["block0.out.weight"][60, 300] = 0.0  # remove the two isolated elements
    shared_only["block2.in.weight"][250, 90] = 0.0
    paths = {}
    for name, model in (("both", both), ("shared", shared_only)):
        paths[name] = folder / f"{name}.safetensors"
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model.items()}, str(paths[name]))
    return paths


def test_cli_table_lists_outlier_dimensions_before_isolated_traps(planted_files):
    code, out, _ = _cli(["analyze", str(planted_files["both"]), "--randomize", "--format", "table"])
    assert code == 0
    lines = out.splitlines()
    dim = next(i for i, line in enumerate(lines) if line.strip().startswith(f"outlier dimension {IDX}:"))
    iso = lines.index("isolated correlation traps: 2")
    assert dim < iso
    assert "6 layers, 6 traps" in lines[dim] and "block0.in (col)" in lines[dim] and "block1.out (row)" in lines[dim]
    assert sorted(line.split()[2] for line in lines[iso + 1:iso + 3]) == ["block0.out:", "block2.in:"]


def test_cli_fail_on_traps_counts_isolated_traps_only(planted_files):
    shared = str(planted_files["shared"])
    assert _cli(["analyze", shared, "--fail-on", "traps", "--format", "csv"])[0] == 0
    code, _, err = _cli(["analyze", shared, "--fail-on", "outlier-dims", "--format", "csv"])
    assert code == 3 and "1 outlier dimension(s)" in err
    code, out, err = _cli(["analyze", str(planted_files["both"]), "--fail-on", "traps", "--format", "csv"])
    assert code == 3 and "2 isolated correlation trap(s)" in err and "num_traps" in out
    assert _cli(["analyze", shared, "--fail-on", "outlier-dim"])[0] == 2  # unknown choice: usage error


# ------------------------------------------------------------------------------------ HTML and figures


@pytest.fixture(scope="module")
def kept_report():
    return htsr.analyze(planted_model(0), randomize=True, seed=0, keep_esd=True)


def test_html_shows_outlier_dimensions_before_isolated_traps(kept_report):
    text = kept_report.to_html()
    section = text[text.index('id="traps"'):text.index('id="esd"')]
    groups_at = section.index('<section class="trap-groups">')
    assert f"outlier dimension {IDX}: 6 layers, max |w|" in section[groups_at:]
    layer_ids = dict(zip(kept_report.details["name"], kept_report.details["layer_id"]))
    heads = [section.index(f"<h3>layer {layer_ids[n]}: {n}</h3>") for n in ("block0.out", "block2.in", "block1.out")]
    assert groups_at < heads[0] and groups_at < heads[1] and max(heads[:2]) < heads[2]  # isolated ones first
    assert section.count("<td class=\"s\">isolated</td>") == 2
    assert section.count(f"<td class=\"s\">outlier dimension {IDX}</td>") == 6


def test_overlay_figure_names_the_group(kept_report):
    pytest.importorskip("matplotlib")
    from htsr.plotting import layer_figures, trap_note

    ids = dict(zip(kept_report.details["name"], kept_report.details["layer_id"]))
    assert trap_note(kept_report, (int(ids["block0.out"]), None)) == f"outlier dimension {IDX} (6 layers); 1 isolated"
    assert trap_note(kept_report, (int(ids["block1.in"]), None)) == f"outlier dimension {IDX} (6 layers)"
    key = (int(ids["block1.in"]), None)
    figs = dict(layer_figures(kept_report.layer(*key), trap_note(kept_report, key)))
    title = figs["randesd"].axes[0].get_title()
    assert title.endswith(f"traps: outlier dimension {IDX} (6 layers)")
    clean = htsr.analyze(planted_model(0, plant=False), randomize=True, seed=0, keep_esd=True)
    assert trap_note(clean, (int(clean.details["layer_id"][0]), None)) == ""
