"""The front door: :func:`analyze`, :func:`describe` — orchestration only."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Iterable
from typing import Any

from ._version import __version__
from .config import AnalysisConfig
from .errors import SourceError
from .report import Report, describe_frame


def analyze(model: Any, *, plot: bool = False, savefig: str | None = None, dask: Any = None, base_model: Any = None,
            **options: Any):
    """Analyze every weight matrix of ``model`` and return a :class:`~htsr.report.Report`.

    Parameters
    ----------
    model
        A ``torch.nn.Module``, a state dict, a dict of numpy arrays, or a path to a
        ``.safetensors`` / ``.npz`` / ``.bin`` / ``.pt`` / ``.pth`` file or a Hugging Face folder.
    plot : bool
        Show the per-layer figures (inline in Jupyter). Nothing is saved unless ``savefig`` is given.
    savefig : str, optional
        Folder to write the figures into (PNG).
    dask : distributed.Client or True, optional
        Run one task per tensor on a Dask cluster (``True``: an embedded local cluster).
        Every worker must see the model's path. Default: this process (threads, or the GPU).
    base_model : optional
        A model of the same architecture (anything ``model`` may be): every row is then
        ``W − W_base``, matched by key; unmatched layers are listed in ``Report.skipped``.
    **options
        Fields of :class:`~htsr.config.AnalysisConfig`: ``min_evals=10, max_evals=15000,
        max_N=50000, pool=True, conv2d_norm=True, randomize=False, mp_fit=False, detX=False,
        seed=0, layers=None, device='auto', workers=0, fast=False, progress=None, reference=False``
        (``reference=True``: the reference tool's treatment of small, Conv1d and sliced layers, as
        :class:`~htsr.WeightWatcher` uses), and the reference's other options: ``fit='PL'|'TPL'|'E_TPL',
        pl_package, xmax, fix_fingers, xmin_max, max_fingers, finger_thresh, vectors, inverse, intra,
        sparsify, stacked, deltas`` (``docs/compat.md``).

    Returns
    -------
    Report
        ``.details`` (one row per layer), ``.summary``, ``.skipped``, ``.traps``, and
        ``.layers``: the typed :class:`~htsr.results.LayerResult` of each row.

    Examples
    --------
    >>> import numpy as np, htsr
    >>> W = np.random.default_rng(0).standard_normal((300, 100))
    >>> report = htsr.analyze({"fc.weight": W})
    >>> report.details[["name", "N", "M", "num_evals"]].values.tolist()
    [['fc', 300, 100, 100]]
    """
    from . import engine
    from .sources import open_source

    start = time.perf_counter()
    if plot or savefig:
        options.setdefault("keep_esd", True)
    config = AnalysisConfig.from_kwargs(**options)
    source = _with_base(open_source(model), base_model)
    plans = engine.plan(source, config)
    if not any(p.is_layer for p in plans):
        raise SourceError(
            f"{source.description}: no 2-D (or conv) weight matrices found among {len(plans)} tensors"
            + (f" (e.g. {plans[0].tensor.key!r}, shape {plans[0].tensor.shape})" if plans else "") + "."
        )
    todo = [p for p in plans if not p.reason]
    progress = engine.Progress(len(todo), config.progress)
    results: list = []
    try:
        if config.stacked or config.intra:  # rows built from several layers (htsr/combined.py)
            from .combined import run_intra, run_stacked

            outputs: Iterable[list] = run_stacked(plans, config) if config.stacked else run_intra(plans, config)
        elif dask is not None and dask is not False:
            from .cluster import run_dask

            outputs = run_dask(plans, config, dask, progress)
        else:
            outputs = engine.run(plans, config, progress, device=_device(config))
        for out in outputs:
            results.extend(out)
    finally:
        progress.close()
    meta = {
        "htsr_version": __version__,
        "source": source.description,
        "options": {k: (v.value if hasattr(v, "value") else v) for k, v in _options_dict(config).items()},
        "seed": config.seed,
        "elapsed_s": round(time.perf_counter() - start, 3),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    result = Report.from_results(results, plans, config, meta)
    if plot or savefig:
        from . import plotting

        plotting.plot_report(result, show=plot, savedir=savefig)
    result.meta["elapsed_s"] = round(time.perf_counter() - start, 3)
    return result


def _device(config: AnalysisConfig) -> str:
    from .accel import resolve_device

    return resolve_device(config.device)


def _options_dict(config: AnalysisConfig) -> dict:
    from dataclasses import asdict

    d = asdict(config)
    d["layers"] = {"include": list(config.layers.include), "exclude": list(config.layers.exclude)}
    return d


def _with_base(source: Any, base_model: Any) -> Any:
    if base_model is None:
        return source
    from .sources.delta import delta_source

    return delta_source(source, base_model)


def describe(model: Any, *, base_model: Any = None, **options: Any):
    """List every weight tensor and whether it will be analyzed (no eigenvalues computed).

    Returns
    -------
    pandas.DataFrame
        Columns ``layer_id, name, longname, layer_type, shape, dtype, N, M, Q, rf, num_evals,
        analyzed, reason``.

    Examples
    --------
    >>> import numpy as np, htsr
    >>> d = htsr.describe({"fc.weight": np.ones((20, 10)), "fc.bias": np.ones(20), "ln.weight": np.ones(10)})
    >>> d[["name", "analyzed"]].values.tolist()
    [['fc', True], ['ln', False]]
    """
    from . import engine
    from .sources import open_source

    config = AnalysisConfig.from_kwargs(**options)
    return describe_frame(engine.plan(_with_base(open_source(model), base_model), config))
