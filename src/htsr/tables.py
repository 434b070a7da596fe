"""The one way htsr declares a table: a :class:`Table` of :class:`Column` s.

Every table htsr writes (the per-layer details, skipped layers, describe, traps,
trap groups, ``htsr compare`` and the Monitor history) is one ``Table``; each
column is declared once with its name, type, meaning and the attribute it reads
from a typed row object (a :class:`~htsr.results.LayerResult`, a trap, a
comparison row …). The DataFrames, the HTML tables and the CLI's text tables
are all made from these declarations, so a new column is one ``Column`` line
(plus the attribute it reads).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Values of :attr:`Column.show`: where a column appears besides the CSV/JSON (which hold every column).
SHOW = ("", "html", "cli")
#: The columns that name a row; the short tables start with them.
IDENTITY = ("layer_id", "name", "longname", "slice_id", "layer_type", "N", "M", "num_evals")


@dataclass(frozen=True)
class Column:
    """One output column, declared once.

    Attributes
    ----------
    name : str
        The column's name in the CSV, JSON, HTML and text tables.
    dtype : str
        ``int``, ``float``, ``str``, ``bool``, ``Int`` (an integer column that may hold missing values,
        always pandas ``Int64``) or ``object`` (kept as is: tuples, lists).
    meaning : str
        One sentence (``docs/columns.md`` is generated from the details table's meanings).
    group : str
        When the column is present (the details table: ``core`` and ``htsr`` always; ``randomize``,
        ``mp_fit``, ``detX``, ``vectors`` with those options; ``tpl`` with ``fit='TPL'/'E_TPL'``,
        ``fingers`` with ``fix_fingers='clip_xmax'``, ``intra`` with ``intra=True``; ``slice`` when a
        row is a conv slice). Other tables use ``core``.
    origin : str
        ``reference`` when the reference tool has the column (sorted in ASCII order after
        ``layer_id, name``), ``htsr`` when it is htsr's own (after them, in declared order).
    path : str
        The attribute of the row object it is read from (dotted; a missing part gives an empty cell;
        a mapping row is read by key).
    show : str
        ``cli``: in the short column set of the CLI table and the HTML page; ``html``: in the HTML
        page's short set only; ``''``: in the full tables only (every column is one click away in
        the HTML page).
    """

    name: str
    dtype: str
    meaning: str
    group: str = "core"
    origin: str = "htsr"
    path: str = ""
    show: str = ""

    def __post_init__(self) -> None:
        if self.show not in SHOW:
            raise ValueError(f"Column {self.name!r}: show must be one of {SHOW}; got {self.show!r}.")

    def value(self, row: Any) -> Any:
        """This column's value for one row object (None when a part of the path is absent)."""
        obj = row
        for part in (self.path or self.name).split("."):
            obj = obj.get(part) if isinstance(obj, Mapping) else getattr(obj, part, None)
            if obj is None:
                return None
        return obj


def typed_array(col: Column, values: list) -> Any:
    """A pandas array of ``values`` in the column's dtype (None → NaN, <NA> or '')."""
    import numpy as np
    import pandas as pd

    if col.dtype == "float":
        return pd.array([np.nan if v is None else float(v) for v in values], dtype="float64")
    if col.dtype == "Int":
        return pd.array([None if v is None else int(v) for v in values], dtype="Int64")
    if col.dtype == "int":
        if any(v is None for v in values):
            return pd.array(values, dtype="Int64")
        return pd.array([int(v) for v in values], dtype="int64")
    if col.dtype == "bool":
        if any(v is None for v in values):
            return pd.array(values, dtype="boolean")
        return pd.array([bool(v) for v in values], dtype="bool")
    if col.dtype == "object":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return pd.array(["" if v is None else str(v) for v in values], dtype="object")


@dataclass
class Table:
    """A declared table: its name, one sentence and its columns in declared order.

    Not frozen on purpose: a test may add a column to a declared table (``monkeypatch.setattr(table,
    "columns", ...)``) and see it in every output.
    """

    name: str
    meaning: str
    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"Table {self.name!r}: a column is declared twice.")

    def __getitem__(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self.columns)

    @property
    def names(self) -> list[str]:
        """The column names in declared order."""
        return [c.name for c in self.columns]

    def cells(self, rows: Iterable[Any], names: Sequence[str] | None = None) -> list[list[Any]]:
        """The values of ``names`` (default: every column) for each row object, as lists."""
        cols = [self[n] for n in (self.names if names is None else names)]
        return [[c.value(r) for c in cols] for r in rows]

    def frame(self, rows: Sequence[Any], names: Sequence[str] | None = None) -> Any:
        """A typed DataFrame of ``rows``: the columns ``names`` (default: every column), in that order."""
        import pandas as pd

        order = self.names if names is None else list(names)
        data = {n: typed_array(self[n], [self[n].value(r) for r in rows]) for n in order}
        return pd.DataFrame(data, columns=order)

    def view_order(self, present: Iterable[str]) -> list[str]:
        """The order people read ``present`` in: the identity columns (:data:`IDENTITY`), then numbers, then text."""
        present = [n for n in present if n in self]
        head = [n for n in IDENTITY if n in present]
        rest = [n for n in present if n not in head]
        return (head + [n for n in rest if self[n].dtype not in ("str", "object")]
                + [n for n in rest if self[n].dtype in ("str", "object")])

    def shown(self, present: Iterable[str], where: str) -> list[str]:
        """The short column set for ``where`` ('cli' or 'html') among ``present``, in :meth:`view_order`."""
        want = ("cli",) if where == "cli" else ("cli", "html")
        return [n for n in self.view_order(present) if self[n].show in want]

    def markdown(self) -> str:
        """The columns as a Markdown table (name, type, group, origin, meaning)."""
        lines = ["| column | type | group | origin | meaning |", "|---|---|---|---|---|"]
        lines += [f"| `{c.name}` | {c.dtype} | {c.group} | {c.origin} | {c.meaning} |" for c in self.columns]
        return "\n".join(lines)
