"""Eigenvector localization metrics (``vectors=True``), as the reference reports them.

For each matrix W of a layer (each conv slice), the eigenvectors v of the
smaller Gram matrix (W Wᵀ or WᵀW) are scored by

* localization ratio ‖v‖₁ / ‖v‖_∞ (≈ how many entries carry the vector),
* participation ratio ‖v‖₂ / ‖v‖₄,
* a discrete entropy: the 100-bin density histogram h of |v| − mean|v|,
  p = (h + 1e-10) / √(2π), normalized to sum 1, entropy −Σ p ln p.

Delocalized (random) vectors have large ratios and entropies; a vector that
lives on a few entries (a "localized" spike) has small ones. The eigenvectors
of all slices are pooled and split at the power-law fit's ``xmin``: *tail*
(the ``num_pl_spikes`` largest eigenvalues, those ≥ xmin) and *bulk* (below). The layer gets the mean and the
variance (population) of each metric over each part: 12 columns
``{bulk,tail}_{mean,var}_{vec_entropy,loc_ratio,part_ratio}`` (NaN for an empty
part). All metrics are invariant to the sign of v.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

EPSILON = 1e-10
NUM_BINS = 100
METRICS = ("vec_entropy", "loc_ratio", "part_ratio")
COLUMNS = tuple(f"{part}_{stat}_{m}" for m in METRICS for part in ("bulk", "tail") for stat in ("mean", "var"))


def localization_ratio(v: np.ndarray) -> np.ndarray:
    """‖v‖₁ / ‖v‖_∞ of each column of ``v`` (or of one vector)."""
    a = np.abs(np.asarray(v, dtype=np.float64))
    return np.sum(a, axis=0) / np.max(a, axis=0)


def participation_ratio(v: np.ndarray) -> np.ndarray:
    """‖v‖₂ / ‖v‖₄ of each column of ``v`` (or of one vector)."""
    a = np.asarray(v, dtype=np.float64)
    return np.sqrt(np.sum(a * a, axis=0)) / np.sum(a ** 4, axis=0) ** 0.25


def discrete_entropy(v: np.ndarray, num_bins: int = NUM_BINS) -> float:
    """The reference's discrete entropy of one vector (see the module docstring).

    Examples
    --------
    >>> e = discrete_entropy(np.ones(10) / np.sqrt(10))   # one occupied bin out of 100
    >>> round(e, 6)
    2.4e-07
    """
    a = np.abs(np.asarray(v, dtype=np.float64).ravel())
    a = a - np.mean(a)
    h = np.histogram(a, density=True, bins=num_bins)[0]
    p = (h + EPSILON) / np.sqrt(2 * np.pi)
    p = p / np.sum(p)
    return float(-np.sum(p * np.log(p)))


@dataclass(frozen=True)
class VectorMetrics:
    """Per-eigenvector metrics of one layer, sorted by eigenvalue (all slices pooled)."""

    evals: np.ndarray
    vec_entropy: np.ndarray
    loc_ratio: np.ndarray
    part_ratio: np.ndarray


def vector_metrics(stack: np.ndarray) -> VectorMetrics:
    """Eigenvalues and eigenvector metrics of every matrix in ``stack`` (shape (rf, rows, cols)).

    The eigenvectors are those of the smaller Gram matrix of each slice,
    computed with :func:`numpy.linalg.eigh` (unit norm).
    """
    evs, ents, locs, parts = [], [], [], []
    for W in np.asarray(stack, dtype=np.float64):
        X = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W
        w, V = np.linalg.eigh(X)
        evs.append(w)
        ents.append([discrete_entropy(V[:, k]) for k in range(V.shape[1])])
        locs.append(localization_ratio(V))
        parts.append(participation_ratio(V))
    evals = np.concatenate(evs)
    order = np.argsort(evals, kind="stable")
    return VectorMetrics(evals[order], np.concatenate(ents)[order], np.concatenate(locs)[order],
                         np.concatenate(parts)[order])


@dataclass(frozen=True)
class VectorColumns:
    """The 12 ``vectors=True`` columns of one layer (NaN for an empty part)."""

    bulk_mean_vec_entropy: float
    bulk_var_vec_entropy: float
    tail_mean_vec_entropy: float
    tail_var_vec_entropy: float
    bulk_mean_loc_ratio: float
    bulk_var_loc_ratio: float
    tail_mean_loc_ratio: float
    tail_var_loc_ratio: float
    bulk_mean_part_ratio: float
    bulk_var_part_ratio: float
    tail_mean_part_ratio: float
    tail_var_part_ratio: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def vector_columns(stack: np.ndarray, num_tail: int | None) -> VectorColumns:
    """The 12 ``vectors=True`` columns of one layer.

    Parameters
    ----------
    stack : ndarray, shape (rf, rows, cols)
        The layer's matrices, scaled as for its ESD.
    num_tail : int or None
        How many of the largest eigenvalues form the tail: the power-law fit's
        ``num_pl_spikes`` (None, a failed fit: every vector counts as tail, as the
        reference's xmin of −1 does).

    Returns
    -------
    VectorColumns
        ``{bulk,tail}_{mean,var}_{vec_entropy,loc_ratio,part_ratio}``.

    Notes
    -----
    The reference splits at ``eigenvalue ≥ xmin`` with eigenvalues from a second
    eigensolver, so the eigenvector *at* xmin falls on either side depending on
    the last bit of two roundings of the same number (on the test models about
    half the layers put it in the bulk). htsr counts it in the tail, as the fit
    and ``num_pl_spikes`` do.

    Examples
    --------
    >>> W = np.random.default_rng(0).standard_normal((1, 200, 50))
    >>> cols = vector_columns(W, num_tail=5)
    >>> 5 < cols.bulk_mean_loc_ratio < 50
    True
    """
    vm = vector_metrics(stack)
    n = vm.evals.size
    k = n if num_tail is None else max(0, min(int(num_tail), n))
    tail = np.zeros(n, dtype=bool)
    tail[n - k:] = True
    out: dict[str, float] = {}
    for name in METRICS:
        data = getattr(vm, name)
        for part, sel in (("bulk", ~tail), ("tail", tail)):
            d = data[sel]
            out[f"{part}_mean_{name}"] = float(np.mean(d)) if d.size else float("nan")
            out[f"{part}_var_{name}"] = float(np.var(d)) if d.size else float("nan")
    return VectorColumns(**out)
