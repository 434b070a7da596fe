"""htsr — diagnose trained neural networks from their weights alone.

For every layer htsr computes the eigenvalues of X = WᵀW (the empirical
spectral density), fits its tail to a power law (``alpha``: near 2 well
trained, below 2 over-trained, above 6 under-trained), fits the random bulk to
Marchenko–Pastur and shuffles W to find correlation traps.

>>> import htsr
>>> report = htsr.analyze(model)                       # doctest: +SKIP
>>> watcher = htsr.WeightWatcher(model=model)          # the reference tool's API  # doctest: +SKIP

The reference tool's constants and its treatment of layers are in :mod:`htsr.compat`
(``import htsr.compat as ww``), not here: this namespace is htsr's own API.
"""

from __future__ import annotations

from . import pruning
from ._version import __version__
from .api import analyze, describe
from .compare import compare
from .compat import WeightWatcher
from .config import AnalysisConfig
from .errors import HtsrError, LayerError, OptionError, SourceError, UnknownOptionError, UnsafeFileError
from .monitor import Monitor
from .pruning import prune
from .report import Report
from .results import LayerResult
from .spectral.powerlaw import PowerLawFit, fit_powerlaw
from .tempbalance import TempBalance
from .transforms import SVDSharpness, SVDSmoothing, remove_traps

__all__ = [
    "__version__",
    "analyze",
    "describe",
    "Report",
    "LayerResult",
    "AnalysisConfig",
    "compare",
    "Monitor",
    "fit_powerlaw",
    "PowerLawFit",
    "WeightWatcher",
    "HtsrError",
    "SourceError",
    "UnsafeFileError",
    "LayerError",
    "OptionError",
    "UnknownOptionError",
    "remove_traps",
    "SVDSmoothing",
    "SVDSharpness",
    "prune",
    "pruning",
    "TempBalance",
]
