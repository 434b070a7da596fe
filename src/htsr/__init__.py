"""htsr — diagnose trained neural networks from their weights alone.

For every layer htsr computes the eigenvalues of X = WᵀW (the empirical
spectral density), fits its tail to a power law (``alpha``: near 2 well
trained, below 2 over-trained, above 6 under-trained), fits the random bulk to
Marchenko–Pastur and shuffles W to find correlation traps.

>>> import htsr
>>> report = htsr.analyze(model)                       # doctest: +SKIP
>>> watcher = htsr.WeightWatcher(model=model)          # the reference tool's API  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import analyze, describe
from .compat import WeightWatcher
from .errors import HtsrError, LayerError, OptionError, SourceError, UnknownOptionError, UnsafeFileError
from .spectral.powerlaw import PowerLawFit, fit_powerlaw
from .transforms import SVDSharpness, SVDSmoothing, remove_traps

__all__ = [
    "__version__",
    "analyze",
    "describe",
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
]
