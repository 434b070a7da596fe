"""The front door: :func:`analyze`, :func:`describe` — orchestration only."""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

from .config import AnalysisConfig
from .errors import SourceError

_PLOT_KEYS = ("plot", "savefig")


def _version() -> str:
    from . import __version__

    return __version__


def analyze(model: Any, *, plot: bool = False, savefig: str | None = None, dask: Any = None, **options: Any):
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
    **options
        Fields of :class:`~htsr.config.AnalysisConfig`: ``min_evals=10, max_evals=15000,
        max_N=50000, pool=True, conv2d_norm=True, randomize=False, mp_fit=False, detX=False,
        seed=0, layers=None, device='auto', workers=0, fast=False, progress=None``.

    Returns
    -------
    Report
        ``.details`` (one row per layer), ``.summary``, ``.skipped``, ``.traps``.

    Examples
    --------
    >>> import numpy as np, htsr
    >>> W = np.random.default_rng(0).standard_normal((300, 100))
    >>> report = htsr.analyze({"fc.weight": W})
    >>> report.details[["name", "N", "M", "num_evals"]].values.tolist()
    [['fc', 300, 100, 100]]
    """
    from . import engine, report as rpt
    from .sources import open_source

    start = time.perf_counter()
    if plot or savefig:
        options.setdefault("keep_esd", True)
    config = AnalysisConfig.from_kwargs(**options)
    source = open_source(model)
    plans = engine.plan(source, config)
    if not any(p.is_layer for p in plans):
        raise SourceError(
            f"{source.description}: no 2-D (or conv) weight matrices found among {len(plans)} tensors"
            + (f" (e.g. {plans[0].tensor.key!r}, shape {plans[0].tensor.shape})" if plans else "") + "."
        )
    todo = [p for p in plans if not p.reason]
    progress = engine.Progress(len(todo), config.progress)
    rows: list[dict] = []
    traps: list[dict] = []
    esds: dict = {}
    rand_esds: dict = {}
    fits: dict = {}
    try:
        if dask is not None and dask is not False:
            from .cluster import run_dask

            outputs = run_dask(plans, config, dask, progress)
        else:
            outputs = engine.run(plans, config, progress, device=_device(config))
        for out in outputs:
            rows.extend(out.rows)
            traps.extend(out.traps)
            esds.update(out.esds)
            rand_esds.update(out.rand_esds)
            fits.update(out.fits)
    finally:
        progress.close()
    groups = {"core", "htsr"}
    if config.randomize:
        groups.add("randomize")
    if config.mp_fit:
        groups.add("mp_fit")
    if config.detX:
        groups.add("detX")
    details = rpt.make_details(rows, groups)
    skipped = _skipped_frame(plans)
    import pandas as pd

    trap_frame = pd.DataFrame(traps, columns=list(rpt.TRAP_COLUMNS)) if traps else pd.DataFrame(columns=list(rpt.TRAP_COLUMNS))
    meta = {
        "htsr_version": _version(),
        "source": source.description,
        "options": {k: (v.value if hasattr(v, "value") else v) for k, v in _options_dict(config).items()},
        "seed": config.seed,
        "elapsed_s": round(time.perf_counter() - start, 3),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    result = rpt.Report(details=details, summary=rpt.summarize(details), skipped=skipped, traps=trap_frame,
                        meta=meta, esds=esds, rand_esds=rand_esds, fits=fits)
    if plot or savefig:
        from . import plotting

        plotting.plot_report(result, show=plot, savedir=savefig)
    meta["elapsed_s"] = round(time.perf_counter() - start, 3)
    return result


def _device(config: AnalysisConfig) -> str:
    from .accel import resolve_device

    return resolve_device(config.device)


def _options_dict(config: AnalysisConfig) -> dict:
    from dataclasses import asdict

    d = asdict(config)
    d["layers"] = {"include": list(config.layers.include), "exclude": list(config.layers.exclude)}
    return d


def _skipped_frame(plans: list) -> Any:
    import pandas as pd

    from .report import SKIPPED_COLUMNS

    rows = [
        {"layer_id": p.tensor.layer_id, "name": p.tensor.name, "longname": p.tensor.longname,
         "layer_type": p.tensor.layer_type.value, "shape": str(tuple(p.tensor.shape)), "reason": p.reason}
        for p in plans if p.reason and p.is_layer
    ]
    return pd.DataFrame(rows, columns=list(SKIPPED_COLUMNS))


def describe(model: Any, **options: Any):
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
    import pandas as pd

    from . import engine
    from .sources import open_source

    config = AnalysisConfig.from_kwargs(**options)
    source = open_source(model)
    rows = []
    for p in engine.plan(source, config):
        g = p.geometry
        rows.append({
            "layer_id": p.tensor.layer_id, "name": p.tensor.name, "longname": p.tensor.longname,
            "layer_type": p.tensor.layer_type.value, "shape": str(tuple(p.tensor.shape)), "dtype": p.tensor.dtype,
            "N": g.N if g else pd.NA, "M": g.M if g else pd.NA, "Q": g.Q if g else float("nan"),
            "rf": g.rf if g else pd.NA, "num_evals": g.num_evals if g else pd.NA,
            "analyzed": not p.reason, "reason": p.reason,
        })
    frame = pd.DataFrame(rows, columns=["layer_id", "name", "longname", "layer_type", "shape", "dtype", "N", "M",
                                        "Q", "rf", "num_evals", "analyzed", "reason"])
    for c in ("N", "M", "rf", "num_evals"):
        frame[c] = frame[c].astype("Int64")
    return frame
