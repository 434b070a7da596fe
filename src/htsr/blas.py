"""The BLAS libraries htsr calls: numpy's bundled OpenBLAS (through ctypes) and the one-thread pinning.

Two helpers, used everywhere the same way:

* :func:`numpy_openblas` — the OpenBLAS libraries numpy's wheels bundle, opened
  once, for the routines numpy does not expose (``?syevd_2stage`` in
  :mod:`htsr.spectral.esd`, in-place ``?syrk`` in :mod:`htsr.blocked`).
* :func:`blas_single_thread` — BLAS pinned to one thread, on every CPU path
  (the engine, the transforms, ``get_ESD(random=True)``): each layer is computed
  by the same single-threaded code, so results are bit-identical for any number
  of worker threads and whatever BLAS threading the calling process has set.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def numpy_openblas() -> tuple[tuple[str, Any], ...]:
    """``(path, ctypes.CDLL)`` of each OpenBLAS library numpy ships (none for other numpy builds)."""
    import ctypes
    import glob
    import os

    import numpy as np

    here = os.path.dirname(np.__file__)
    paths = glob.glob(os.path.join(here, "..", "numpy.libs", "*openblas*")) + glob.glob(
        os.path.join(here, ".dylibs", "*openblas*"))
    out = []
    for path in paths:
        try:
            out.append((path, ctypes.CDLL(path)))
        except OSError:
            continue
    return tuple(out)


def blas_single_thread() -> Any:
    """Context that pins the BLAS libraries to one thread each (threadpoolctl)."""
    # Load every BLAS the workers will call *before* limiting: threadpoolctl only pins the libraries
    # loaded when it is entered. scipy ships its own OpenBLAS; were it loaded later, inside a worker,
    # the first run in a process would use threaded BLAS and differ from later runs in the last bits.
    import scipy.linalg
    import scipy.linalg.blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
