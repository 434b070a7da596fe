"""``inverse=True``: the reference's inverse ESD (eigenvalues 1/λ).

For one matrix this is 1/λ of every eigenvalue. For a pooled conv layer the
reference inverts the *accumulated* eigenvalues after adding each kernel
position's slice, so slice k of rf (k = 0 … rf−1) ends up inverted rf − k times:
inverted when rf − k is odd, left as is when even. :func:`inverse_evals`
reproduces that, so its numbers are the reference's. The singular-value columns
(``sv_max``, ``sv_min``, ``rank_loss``) stay those of W; everything computed from
the eigenvalues (the fit, norms, ranks, entropy, MP fit) uses the inverted ones.
"""

from __future__ import annotations

import numpy as np


def inverse_evals(per_slice: list[np.ndarray]) -> np.ndarray:
    """Sorted eigenvalues of the reference's inverse ESD from each slice's eigenvalues.

    Parameters
    ----------
    per_slice : list of ndarray
        Eigenvalues of each kernel position's matrix, in slice order (one array for a dense layer).

    Returns
    -------
    ndarray
        Sorted; a zero eigenvalue becomes ``inf``.

    Examples
    --------
    >>> inverse_evals([np.array([2.0, 4.0])]).tolist()
    [0.25, 0.5]
    >>> inverse_evals([np.array([2.0]), np.array([4.0]), np.array([8.0])]).tolist()  # rf = 3
    [0.125, 2.0, 4.0]
    """
    rf = len(per_slice)
    parts = []
    with np.errstate(divide="ignore"):
        for k, ev in enumerate(per_slice):
            ev = np.asarray(ev, dtype=np.float64)
            parts.append(1.0 / ev if (rf - k) % 2 == 1 else ev)
    return np.sort(np.concatenate(parts)) if parts else np.empty(0)
