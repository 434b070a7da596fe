"""Norm and rank metrics of an ESD (the reference's formulas)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .esd import rank_count

EPSILON = 1e-10
WEAK_RANK_TOLERANCE = 1e-6


@dataclass(frozen=True)
class NormMetrics:
    """Norm and rank metrics of one ESD (the reference's formulas; see :func:`norm_metrics`)."""

    norm: float
    log_norm: float
    spectral_norm: float
    log_spectral_norm: float
    lambda_max: float
    alpha_weighted: float
    log_alpha_norm: float
    stable_rank: float
    matrix_rank: int
    entropy: float
    weak_rank_loss: int


def norm_metrics(evals: np.ndarray, alpha: float, N: int, tolerance: float = WEAK_RANK_TOLERANCE) -> NormMetrics:
    """Metrics that depend on the eigenvalues (and alpha).

    ``alpha`` may be NaN (a failed fit): the alpha-based metrics are then NaN too.

    Examples
    --------
    >>> import numpy as np
    >>> m = norm_metrics(np.array([1.0, 4.0]), alpha=2.0, N=2)
    >>> m.norm, m.stable_rank, m.log_alpha_norm
    (5.0, 1.25, 1.2304489213782739)
    """
    evals = np.asarray(evals, dtype=np.float64)
    norm = float(np.sum(evals))
    lmax = float(np.max(evals))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_norm = float(np.log10(norm))
        log_spectral = float(np.log10(lmax))
        if np.isfinite(alpha):
            alpha_weighted = float(alpha * log_spectral)
            log_alpha_norm = float(np.log10(np.sum(evals ** alpha)))
        else:
            alpha_weighted = log_alpha_norm = float("nan")
        stable_rank = norm / lmax if lmax > 0 else float("nan")
    sv = np.sqrt(evals)
    rank = rank_count(sv, N)
    return NormMetrics(
        norm=norm, log_norm=log_norm, spectral_norm=lmax, log_spectral_norm=log_spectral, lambda_max=lmax,
        alpha_weighted=alpha_weighted, log_alpha_norm=log_alpha_norm, stable_rank=float(stable_rank),
        matrix_rank=rank, entropy=matrix_entropy(evals, rank),
        weak_rank_loss=int(np.count_nonzero(evals < tolerance)),
    )


def matrix_entropy(evals: np.ndarray, rank: int) -> float:
    """−Σ p ln p / ln(rank + 1e-10), p = λ/Σλ + 1e-10 (the reference's definition)."""
    total = np.sum(evals)
    if total <= 0:
        return float("nan")
    p = evals / total + EPSILON
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-np.sum(p * np.log(p)) / np.log(rank + EPSILON))
