"""The declared tables: a new column is a field on a spectral result plus one Column line, and it shows everywhere."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import htsr
from htsr import cli
from htsr import report as rep
from htsr.spectral.metrics import NormMetrics
from htsr.tables import Column, Table


@pytest.fixture
def half_norm(monkeypatch):
    """A new column: a field on the spectral result (here a property added to NormMetrics) and one Column line."""
    monkeypatch.setattr(NormMetrics, "half_norm", property(lambda m: m.norm / 2), raising=False)
    col = Column("half_norm", "float", "Half the squared Frobenius norm.", "core", "htsr", "metrics.half_norm",
                 show="cli")
    monkeypatch.setattr(rep.DETAILS, "columns", rep.DETAILS.columns + (col,))
    return col


def test_a_new_column_shows_in_csv_json_html_and_cli(half_norm, tmp_path):
    W = np.random.default_rng(3).standard_normal((120, 50))
    expected = float(np.sum(W.astype(np.float64) ** 2)) / 2
    path = tmp_path / "m.npz"
    np.savez(path, **{"fc.weight": W})
    report = htsr.analyze(str(path))
    # CSV and JSON
    assert report.details.columns[-1] == "half_norm"  # htsr's own columns come last, in declared order
    assert report.details["half_norm"][0] == pytest.approx(expected, rel=1e-12)
    header, row = report.to_csv().splitlines()
    assert header.split(",")[-1] == "half_norm" and float(row.split(",")[-1]) == pytest.approx(expected, rel=1e-12)
    assert json.loads(report.to_json())["details"][0]["half_norm"] == pytest.approx(expected, rel=1e-12)
    # HTML: in the layers table's short column set (not hidden behind "all columns")
    html = report.to_html()
    table = html[html.index('id="layers"'):]
    table = table[:table.index("</table>")]
    assert "<th>half_<wbr>norm</th>" in table
    assert f'data-v="{expected!r}"' in table or f'data-v="{float(report.details["half_norm"][0])!r}"' in table
    # the CLI table
    out = io.StringIO()
    assert cli.main(["analyze", str(path), "--format", "table", "-q"], stdout=out, stderr=io.StringIO()) == 0
    head = out.getvalue().splitlines()[0].split()
    assert "half_norm" in head
    assert out.getvalue().splitlines()[2].split()[head.index("half_norm")] == f"{expected:.3f}"


def test_a_full_only_column_is_one_click_away_in_html(monkeypatch):
    col = Column("twice_alpha", "float", "2·alpha.", "core", "htsr", "fit.alpha")
    monkeypatch.setattr(rep.DETAILS, "columns", rep.DETAILS.columns + (col,))
    report = htsr.analyze({"fc.weight": np.random.default_rng(0).standard_normal((100, 40))})
    html = report.to_html()
    assert '<th class="x">twice_<wbr>alpha</th>' in html  # hidden until "all columns" is ticked
    from htsr.texttables import report_table

    assert "twice_alpha" not in report_table(report)


def test_every_table_is_declared_once():
    from htsr.compare import COMPARE
    from htsr.monitor import MONITOR

    tables = (rep.DETAILS, rep.SKIPPED, rep.DESCRIBE, rep.TRAPS, rep.TRAP_GROUPS, COMPARE, MONITOR)
    assert all(isinstance(t, Table) for t in tables)
    assert len({t.name for t in tables}) == len(tables)
    with pytest.raises(ValueError, match="twice"):
        Table("x", "", (Column("a", "int", ""), Column("a", "int", "")))
    with pytest.raises(ValueError, match="show"):
        Column("a", "int", "", show="somewhere")


def test_frames_are_derived_from_the_typed_report():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((200, 100)) / 10
    W[7, 9] = 8.0
    report = htsr.analyze({"fc.weight": W, "tiny.weight": rng.standard_normal((4, 3))}, randomize=True)
    with pytest.raises(AttributeError):
        report.layers = ()  # frozen
    assert report.details is report.details  # derived once
    assert list(report.skipped["name"]) == [s.name for s in report.skipped_layers] == ["tiny"]
    assert len(report.traps) == len(report.trap_list) >= 1
    t = report.trap_list[0]
    assert (t.entries[0][0], t.entries[0][1]) == (7, 9) and t.kind == "isolated" and report.group(t) is None
    assert report.traps["trap_eval"].tolist() == [x.trap_eval for x in report.trap_list]
    assert report.summary["num_isolated_traps"] == report.grouping.num_isolated == len(report.trap_list)
    assert report.config.randomize and report.config.seed == 0
