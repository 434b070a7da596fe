"""Outlier dimensions: correlation traps of different layers that share one index.

A correlation trap (:mod:`htsr.spectral.traps`) is located at a few entries
(row, col) of the analyzed matrix. For dense and embedding layers that matrix
is the weight as stored, (out, in); for conv layers it is one kernel
position's (out channels, in channels) slice; for GPT-2's Conv1D it is the
stored (in, out). In every case row i is index i of the stored tensor's first
axis and column j index j of its second axis, so an index names the same
neuron, channel or residual-stream coordinate in every layer that has an axis
of that length.

Transformers carry a few such coordinates with very large weights in many
layers at once (an "outlier dimension" of the residual stream: written by the
rows of the output projections, read by the columns of the embeddings and
input projections). Each of those layers then shows one trap, and counting
them as independent signs of over-training is wrong: it is one structure seen
several times. :func:`group_traps` finds them:

* every trap stands for one large element, its *principal entry*. Usually a
  trap is located at a single entry; when two large elements of one matrix
  are about equally large their spikes are nearly degenerate and the
  singular vectors mix them, so both traps list both entries. The entries of
  one matrix (layer and slice) are therefore matched one to one with its
  traps, largest rank-one component first, and each trap keeps the entry it
  is matched to (its top entry when none is left);
* the principal entry (i, j) contributes two keys, (rows, i) and (cols, j):
  the *length* of the axis and the index, not which axis it is — a row of one
  layer and a column of another meet when both axes have the same length;
* a key reached by traps of at least two different layers is a candidate;
  candidates are taken in order of more layers first (then the larger
  element) and each trap joins the first one it reaches (a trap belongs to
  at most one group); a candidate left with fewer than two layers is dropped;
* the traps in no group are *isolated*: a large element private to its layer.
  Spikes of the weights' mean (``kind == 'mean'``) are never grouped.

Two layers can share an index by chance. Each group carries ``chance``: the
expected number of indices on axes of that length that at least as many
layers would share if every layer's trap indices were placed uniformly at
random (exact under that null: per index, the number of layers that hit it
is a sum of independent Bernoulli variables). ``chance`` ≪ 1 means the
sharing is no coincidence; for a two-layer group in a model with many traps
it can be near 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SHARED = "shared_dim"
ISOLATED = "isolated"
MEAN = "mean"


@dataclass(frozen=True)
class TrapGroup:
    """One index shared by the traps of two or more layers.

    Attributes
    ----------
    axis : str
        ``'row'`` or ``'col'`` when every member has the index on that axis of
        its stored matrix, ``'row+col'`` when some layers have it as a row and
        others as a column.
    index : int
        The shared index.
    size : int
        Length of the axes that share it.
    layers : tuple of str
        Longnames of the member layers, in the order their traps were given.
    axes : tuple of str
        For each layer in ``layers``, where the index is: ``'row'``, ``'col'`` or ``'row+col'``.
    num_traps : int
        Number of traps in the group (a layer can have more than one).
    max_value : float
        Largest |w| of the group's traps' principal entries.
    chance : float
        Expected number of indices shared by at least ``len(layers)`` layers
        if the trap entries had been placed at random (see the module docstring).
    """

    axis: str
    index: int
    size: int
    layers: tuple[str, ...]
    axes: tuple[str, ...]
    num_traps: int
    max_value: float
    chance: float

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def describe(self) -> str:
        """One line: ``outlier dimension 99 (row/col of 384): 5 layers, 6 traps, max |w| 7.91``."""
        return (f"outlier dimension {self.index} ({self.axis} of {self.size}): {self.num_layers} layers, "
                f"{self.num_traps} traps, max |w| {self.max_value:.3g}")


@dataclass(frozen=True)
class TrapGrouping:
    """The groups and, for each trap given, its kind and group.

    Attributes
    ----------
    groups : tuple of TrapGroup
        More layers first, then the larger ``max_value``.
    kinds : tuple of str
        Per trap, in input order: ``'shared_dim'``, ``'isolated'`` or ``'mean'``.
    group_of : tuple of int or None
        Per trap: the position of its group in ``groups`` (None when not shared).
    """

    groups: tuple[TrapGroup, ...]
    kinds: tuple[str, ...]
    group_of: tuple[int | None, ...]

    @property
    def num_isolated(self) -> int:
        return sum(k == ISOLATED for k in self.kinds)


def _shape(trap: Mapping) -> tuple[int, int] | None:
    shape = trap.get("shape")
    if shape is None:
        return None
    try:
        rows, cols = (int(s) for s in tuple(shape)[:2])
    except (TypeError, ValueError):
        return None
    return (rows, cols) if rows > 0 and cols > 0 else None


def _entries(trap: Mapping) -> list[tuple[int, int, float, float]]:
    """(row, col, |value|, weight) of a trap's located entries; weight = |rank-one component| (else |value|)."""
    if trap.get("kind") == MEAN or _shape(trap) is None:
        return []
    comps = trap.get("components")
    entries = list(trap.get("entries") or ())
    if comps is None or len(comps) != len(entries):
        comps = None
    out = []
    for k, entry in enumerate(entries):
        try:
            r, c, value = int(entry[0]), int(entry[1]), abs(float(entry[2]))
            weight = abs(float(comps[k])) if comps is not None else value
        except (TypeError, ValueError, IndexError):
            continue
        if np.isfinite(value) and np.isfinite(weight):
            out.append((r, c, value, weight))
    return out


def principal_entries(traps: Sequence[Mapping]) -> list[tuple[int, int, float] | None]:
    """Each trap's principal entry ``(row, col, |value|)``: its entries matched one to one per matrix.

    Within one matrix (``longname``, ``slice_id``), the (trap, entry) pairs are
    taken by decreasing rank-one component; a pair is kept when neither its
    trap nor its entry is taken yet. A trap left over keeps its top entry.
    None for mean spikes and traps without a usable shape or entries.

    Examples
    --------
    >>> principal_entries([  # two equal elements: the spikes mix them
    ...     {"longname": "a", "shape": (8, 8), "entries": [(1, 2, 5.0), (3, 4, 5.0)], "components": [4.0, 3.0]},
    ...     {"longname": "a", "shape": (8, 8), "entries": [(1, 2, 5.0), (3, 4, 5.0)], "components": [3.9, 3.5]},
    ... ])
    [(1, 2, 5.0), (3, 4, 5.0)]
    """
    entries = [_entries(t) for t in traps]
    out: list[tuple[int, int, float] | None] = [None] * len(traps)
    by_matrix: dict[tuple[str, str], list[int]] = {}
    for i, t in enumerate(traps):
        if entries[i]:
            by_matrix.setdefault((str(t.get("longname", "")), repr(t.get("slice_id"))), []).append(i)
    for members in by_matrix.values():
        pairs = sorted((-e[3], i, k) for i in members for k, e in enumerate(entries[i]))
        taken: set[tuple[int, int]] = set()
        for _w, i, k in pairs:
            r, c, value, _ = entries[i][k]
            if out[i] is None and (r, c) not in taken:
                out[i] = (r, c, value)
                taken.add((r, c))
        for i in members:
            if out[i] is None:
                r, c, value, _ = max(entries[i], key=lambda e: e[3])
                out[i] = (r, c, value)
    return out


def _keys(trap: Mapping, entry: tuple[int, int, float] | None) -> dict[tuple[int, int], tuple[set[str], float]]:
    """{(axis length, index): ({'row'|'col'}, |value|)} of a trap's principal entry."""
    shape = _shape(trap)
    out: dict[tuple[int, int], tuple[set[str], float]] = {}
    if shape is None or entry is None:
        return out
    rows, cols = shape
    r, c, value = entry
    for key, axis in (((rows, r), "row"), ((cols, c), "col")):
        if 0 <= key[1] < key[0]:
            axes, top = out.get(key, (set(), 0.0))
            axes.add(axis)
            out[key] = (axes, max(top, value))
    return out


def chance_groups(hits_per_layer: Sequence[int], size: int, num_layers: int) -> float:
    """Expected number of indices of an axis of length ``size`` hit by ≥ ``num_layers`` layers at random.

    Layer ℓ hits ``hits_per_layer[ℓ]`` distinct indices placed uniformly, so
    it hits a given index with probability pₗ = hₗ/size, independently of the
    other layers. The count per index is Poisson-binomial; the expectation
    over the ``size`` indices is ``size · P(count ≥ num_layers)``.

    Examples
    --------
    >>> round(chance_groups([1, 1], 100, 2), 6)  # two layers, one index each: 1/100
    0.01
    >>> chance_groups([1, 1], 100, 3)
    0.0
    """
    if size <= 0:
        return float("nan")
    dist = np.zeros(len(hits_per_layer) + 1)
    dist[0] = 1.0
    for h in hits_per_layer:
        p = min(max(h / size, 0.0), 1.0)
        dist[1:] = dist[1:] * (1.0 - p) + dist[:-1] * p
        dist[0] *= 1.0 - p
    tail = float(dist[max(num_layers, 0):].sum())
    return float(size * min(max(tail, 0.0), 1.0))


def group_traps(traps: Sequence[Mapping]) -> TrapGrouping:
    """Group the traps of different layers that share an index on axes of the same length.

    Parameters
    ----------
    traps : sequence of mapping
        One per trap: ``longname`` (the layer), ``shape`` ((rows, cols) of the
        analyzed matrix), ``entries`` (``(row, col, value)`` triples as located
        by :func:`htsr.spectral.traps.analyze_spikes`), optionally ``components``
        (the rank-one component at each entry), ``slice_id`` (the conv kernel
        position: it only separates matrices for :func:`principal_entries`; it
        does not change which channel an index names) and ``kind`` (``'mean'``
        for the mean's spike, which is never grouped).

    Returns
    -------
    TrapGrouping

    Examples
    --------
    >>> g = group_traps([
    ...     {"longname": "a", "shape": (384, 1536), "entries": [(99, 856, 7.9)]},
    ...     {"longname": "b", "shape": (512, 384), "entries": [(0, 99, 1.9)]},
    ...     {"longname": "c", "shape": (384, 1536), "entries": [(223, 373, -1.8)]},
    ... ])
    >>> g.groups[0].describe()
    'outlier dimension 99 (row+col of 384): 2 layers, 2 traps, max |w| 7.9'
    >>> g.kinds
    ('shared_dim', 'shared_dim', 'isolated')
    """
    keys = [_keys(t, e) for t, e in zip(traps, principal_entries(traps))]
    names = [str(t.get("longname", "")) for t in traps]
    # candidates: key -> layers that reach it
    reach: dict[tuple[int, int], dict[str, None]] = {}
    peak: dict[tuple[int, int], float] = {}
    for name, ks in zip(names, keys):
        for key, (_axes, value) in ks.items():
            reach.setdefault(key, {})[name] = None
            peak[key] = max(peak.get(key, 0.0), value)
    order = sorted((k for k, layers in reach.items() if len(layers) >= 2),
                   key=lambda k: (-len(reach[k]), -peak[k], k[0], k[1]))
    # distinct indices each layer hits, per axis length (for the chance estimate)
    hits: dict[int, dict[str, set[int]]] = {}
    for name, ks in zip(names, keys):
        for size, index in ks:
            hits.setdefault(size, {}).setdefault(name, set()).add(index)
    group_of: list[int | None] = [None] * len(traps)
    groups: list[TrapGroup] = []
    for key in order:
        members = [i for i, ks in enumerate(keys) if group_of[i] is None and key in ks]
        layers = list(dict.fromkeys(names[i] for i in members))
        if len(layers) < 2:
            continue
        axes_of: dict[str, set[str]] = {name: set() for name in layers}
        for i in members:
            axes_of[names[i]] |= keys[i][key][0]
        per_layer = tuple("row+col" if len(a) > 1 else next(iter(a)) for a in axes_of.values())
        every = set().union(*axes_of.values())
        size, index = key
        counts = [len(s) for s in hits[size].values()]
        group = TrapGroup(
            axis="row+col" if len(every) > 1 else next(iter(every)), index=index, size=size,
            layers=tuple(layers), axes=per_layer, num_traps=len(members),
            max_value=max(keys[i][key][1] for i in members),
            chance=chance_groups(counts, size, len(layers)),
        )
        for i in members:
            group_of[i] = len(groups)
        groups.append(group)
    # more layers first, then the larger element; renumber group_of accordingly
    ranked = sorted(range(len(groups)), key=lambda g: (-groups[g].num_layers, -groups[g].max_value,
                                                         groups[g].size, groups[g].index))
    new_pos = {old: new for new, old in enumerate(ranked)}
    final_of = tuple(None if g is None else new_pos[g] for g in group_of)
    kinds = tuple(MEAN if t.get("kind") == MEAN else SHARED if g is not None else ISOLATED
                  for t, g in zip(traps, final_of))
    return TrapGrouping(groups=tuple(groups[g] for g in ranked), kinds=kinds, group_of=final_of)
