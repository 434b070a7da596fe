"""The typed result of one analyzed layer (or conv slice): :class:`LayerResult`.

The engine yields one ``LayerResult`` per row; everything downstream reads
them: :mod:`htsr.report` derives the DataFrames (each column from one declared
attribute path), :mod:`htsr.plotting` and :mod:`htsr.html` draw from their
eigenvalues and fits, the transforms and the compat class use the same
randomization results. The pieces are the frozen results of the pure
functions in :mod:`htsr.spectral`; nothing here computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spectral.esd import ESD
from .spectral.fitting import TailFit
from .spectral.marchenko_pastur import DetX, MPFit
from .spectral.metrics import NormMetrics
from .spectral.powerlaw import PowerLawFit
from .spectral.randomize import RandomizedESD
from .spectral.traps import TrapSearch
from .spectral.vectors import VectorColumns


@dataclass(frozen=True)
class LayerResult:
    """Everything htsr computed for one layer (one row of the report).

    Attributes
    ----------
    layer_id, name, longname, layer_type
        The layer's identity (``layer_type`` as its string value: ``dense``, ``conv2d`` …).
    N, M, rf, num_evals : int
        Larger and smaller side of each matrix, the number of matrices pooled
        (1 for a per-slice row) and the number of eigenvalues, M·rf.
    slice_id : int or None
        The kernel position of a per-slice row (``pool=False``); None for a pooled row.
    status, reason : str
        ``success``, ``failed`` (the fit failed) or ``invalid`` (bad weights), and why.
    esd : ESD or None
        Sorted eigenvalues of WᵀW and the singular-value numbers (None when invalid).
    fit : PowerLawFit, TailFit or None
        The power-law fit of the tail (a :class:`~htsr.spectral.fitting.TailFit` when the
        options ask for another fit: ``fit``, ``pl_package``, ``xmax``, ``fix_fingers``).
    metrics : NormMetrics or None
        Norms, ranks, entropy.
    mp : MPFit or None
        Marchenko–Pastur fit (``mp_fit=True``; None when not asked or when it failed).
    randomized : RandomizedESD or None
        The shuffled matrices' ESD and its MP fit (``randomize=True``).
    traps : TrapSearch or None
        The randomized spikes classified: mean outlier, located traps (``randomize=True``).
    detx : DetX or None
        The detX constraint (``detX=True``).
    vectors : VectorColumns or None
        Eigenvector localization statistics (``vectors=True``).
    xflag : bool or None
        True on an ``intra=True`` row (the product of two consecutive layers).
    storage : str
        What the file stores: the dtype (``bf16``, ``f32`` …) or the quantization
        scheme the matrix was dequantized from (``gptq-int4/g128`` …; :mod:`htsr.sources.quant`).
    """

    layer_id: int
    name: str
    longname: str
    layer_type: str
    N: int
    M: int
    rf: int
    num_evals: int
    slice_id: int | None = None
    status: str = "success"
    reason: str = ""
    esd: ESD | None = None
    fit: PowerLawFit | TailFit | None = None
    metrics: NormMetrics | None = None
    mp: MPFit | None = None
    randomized: RandomizedESD | None = None
    traps: TrapSearch | None = None
    detx: DetX | None = None
    vectors: VectorColumns | None = None
    xflag: bool | None = None
    storage: str = ""

    @property
    def Q(self) -> float:
        """Aspect ratio N/M."""
        return self.N / self.M if self.M else float("nan")

    @property
    def key(self) -> tuple[int, int | None]:
        """``(layer_id, slice_id)``: unique within one report."""
        return self.layer_id, self.slice_id

    @property
    def has_esd(self) -> bool:
        return self.esd is not None

    @property
    def evals(self) -> np.ndarray | None:
        """Sorted eigenvalues (None when the layer could not be analyzed)."""
        return None if self.esd is None else self.esd.evals

    @property
    def warning(self) -> str:
        """``over-trained`` (alpha < 2), ``under-trained`` (alpha > 6) or empty."""
        return "" if self.fit is None else self.fit.warning

    @property
    def erg_gap(self) -> int | None:
        """``num_ERG_spikes − num_pl_spikes`` (the reference's ``ERG_gap``; None without detX or a fit)."""
        if self.detx is None or self.fit is None:
            return None
        return int(self.detx.num) - int(self.fit.num_pl_spikes)
