"""The reference tool's API (weightwatcher 0.7.7), in its own package: ``import htsr.compat as ww``.

* :class:`WeightWatcher` — argument- and column-compatible with the reference's class
  (``watcher.py``); also exported as ``htsr.WeightWatcher``.
* the reference's 124 public constants (``ww.LAYER_TYPE``, ``ww.METRICS``, ``ww.TPL``, …;
  ``constants.py``): its values, some of which differ from htsr's own behaviour
  (``DEFAULT_MIN_EVALS`` = 8, ``ERROR`` = −1), so they are not in the ``htsr`` namespace.
* :class:`ReferenceTreatment` / :data:`REFERENCE` — every way the reference's numbers differ
  from htsr's (``treatment.py``), the strategy the engine receives
  (``htsr.analyze(model, treatment=REFERENCE)``).
* :func:`reference_distances` — the reference's ``distances()`` (``distances.py``).

Switching a script from the reference is one line::

    import htsr.compat as ww     # was: import weightwatcher as ww

Examples
--------
>>> import htsr.compat as ww
>>> ww.LAYER_TYPE.CONV2D, ww.DEFAULT_MIN_EVALS, ww.REFERENCE.min_evals
('conv2d', 8, 8)
"""

from __future__ import annotations

from . import constants as _constants
from .constants import *  # noqa: F403  (the reference's public constants, listed in constants.__all__)
from .distances import reference_distances
from .treatment import REFERENCE, ReferenceTreatment
from .watcher import WeightWatcher

__all__ = ["WeightWatcher", "ReferenceTreatment", "REFERENCE", "reference_distances", *_constants.__all__]
