"""The front door: :func:`analyze`, :func:`describe` — orchestration only."""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

from ._version import __version__
from .config import AnalysisConfig
from .errors import OptionError, SourceError
from .report import PlannedTensor, Report
from .treatment import HTSR, Treatment


def analyze(model: Any, *, plot: bool = False, savefig: str | None = None, dask: Any = None, base_model: Any = None,
            checkpoint: Any = None, treatment: Treatment = HTSR, **options: Any) -> Report:
    """Analyze every weight matrix of ``model`` and return a :class:`~htsr.report.Report`.

    Parameters
    ----------
    model
        A ``torch.nn.Module``, a state dict, a dict of numpy arrays, or a path to a
        ``.safetensors`` / ``.npz`` / ``.bin`` / ``.pt`` / ``.pth`` file or a Hugging Face folder, or a
        Hugging Face Hub name ``'org/name'`` / ``'org/name@revision'`` (weight files only are downloaded;
        offline, ``HF_HUB_OFFLINE=1``, from the local cache; an existing path always wins; :mod:`htsr.hub`).
    plot : bool
        Show the per-layer figures (inline in Jupyter). Nothing is saved unless ``savefig`` is given.
    savefig : str, optional
        Folder to write the figures into (PNG).
    dask : 'local', a scheduler address, a distributed.Client, or True, optional
        Run one task per tensor on a Dask cluster: ``'local'`` (or ``True``) starts an embedded
        ``LocalCluster`` of ``workers`` processes (0: one per core) for the call; an address such
        as ``'tcp://host:8786'`` connects to a running scheduler. Every worker must see the
        model's path. Results are bit-identical to a run in this process, in the same order.
        Default: this process (threads, or the GPU).
    checkpoint : str or path, optional
        A JSON-lines file that every finished layer is appended to. Run the same call again after
        an interruption (even ``kill -9``) and the layers already there are read back, not
        recomputed: the report is identical to an uninterrupted run's. A checkpoint written with
        other options or for another model is refused (:class:`~htsr.errors.CheckpointError`).
        See :mod:`htsr.checkpoint`.
    base_model : optional
        A model of the same architecture (anything ``model`` may be): every row is then
        ``W − W_base``, matched by key; unmatched layers are listed in ``Report.skipped``.
    treatment : Treatment, optional
        How layers become rows (:mod:`htsr.treatment`): htsr's own rules by default;
        ``htsr.compat.REFERENCE`` gives the reference tool's treatment of small, Conv1d
        and sliced layers, as :class:`~htsr.WeightWatcher` uses it (``docs/compat.md``).
    **options
        Fields of :class:`~htsr.config.AnalysisConfig`: ``min_evals=10, max_evals=15000,
        max_N=50000, pool=True, conv2d_norm=True, randomize=False, mp_fit=False, detX=False,
        seed=0, layers=None, device='auto', workers=0, fast=False, progress=None``,
        and the reference's other options: ``fit='PL'|'TPL'|'E_TPL',
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
    if dask is False:
        dask = None
    if dask is not None:
        from .cluster import parse_dask

        dask = parse_dask(dask)
    if checkpoint is not None and (config.stacked or config.intra):
        raise OptionError("The 'checkpoint' option does not work with 'stacked' or 'intra' (rows built from "
                          "several layers).")
    from .hub import resolve  # a Hugging Face Hub name → its local snapshot folder (paths win)

    source = _with_base(open_source(resolve(model), reference_ids=treatment.reference_ids), resolve(base_model))
    plans = engine.plan(source, config, treatment)
    if not any(p.is_layer for p in plans):
        raise SourceError(
            f"{source.description}: no 2-D (or conv) weight matrices found among {len(plans)} tensors"
            + (f" (e.g. {plans[0].tensor.key!r}, shape {plans[0].tensor.shape})" if plans else "") + "."
        )
    todo = [p for p in plans if not p.reason]
    from .progress import Progress

    progress = Progress(len(todo), config.progress, desc="htsr analyze", unit="layer")
    results: list = []
    device = _device(config) if dask is None else "cpu"

    def compute(planned: list) -> Any:
        if config.stacked or config.intra:  # rows built from several layers (htsr/combined.py)
            from .combined import run_intra, run_stacked

            return run_stacked(planned, config, treatment) if config.stacked else run_intra(planned, config, treatment)
        if dask is not None:
            from .cluster import run_dask

            return run_dask(planned, config, dask, progress, treatment)
        return engine.run(planned, config, progress, device=device, treatment=treatment)

    ckpt = None
    early = None
    if dask is None and (savefig or (plot and _watched_inline())):  # figures drawn while the analysis runs
        from .plotting import EarlyFigures

        early = EarlyFigures.start(len(todo), bool(config.deltas))
    try:  # the early figure workers stop however this ends
        try:
            if checkpoint is not None:
                from .checkpoint import Checkpoint, make_header, resume, source_fingerprint

                opts = dict(_options_dict(config, treatment), device=device)
                ckpt = Checkpoint.open(checkpoint, make_header(__version__, opts, source_fingerprint(source)))
                outputs = resume(todo, ckpt, compute, on_done=lambda p: progress.update(p.tensor.longname))
            else:
                outputs = compute(plans)
            for out in outputs:
                results.extend(out)
                if early is not None:
                    early.add(out)
        finally:
            progress.close()
            if ckpt is not None:
                ckpt.close()
        meta = {
            "htsr_version": __version__,
            "source": source.description,
            "options": {k: (v.value if hasattr(v, "value") else v) for k, v in _options_dict(config, treatment).items()},
            "seed": config.seed,
            "elapsed_s": round(time.perf_counter() - start, 3),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if base_model is not None:  # (the compat class builds its own W − W_base source: base_model is None there)
            results, plans = _unchanged_from_base(results, plans)
        result = Report.from_results(results, plans, config, meta)
        if plot or savefig:
            from . import plotting

            plotting.plot_report(result, show=plot, savedir=savefig, progress=config.progress, early=early)
    finally:
        if early is not None:
            early.close()
    import dataclasses

    return dataclasses.replace(result, meta=dict(meta, elapsed_s=round(time.perf_counter() - start, 3)))


def _watched_inline() -> bool:
    """Whether ``plot=True`` shows figures here (in a Jupyter kernel; elsewhere nothing is drawn)."""
    from .progress import in_notebook

    return in_notebook()


def _device(config: AnalysisConfig) -> str:
    from .accel import resolve_device

    return resolve_device(config.device)


def _options_dict(config: AnalysisConfig, treatment: Treatment) -> dict:
    from dataclasses import asdict

    d = asdict(config)
    d["layers"] = {"include": list(config.layers.include), "exclude": list(config.layers.exclude)}
    d["treatment"] = treatment.name
    return d


def _with_base(source: Any, base_model: Any) -> Any:
    if base_model is None:
        return source
    from .sources import open_source
    from .sources.delta import delta_source

    return delta_source(source, open_source(base_model))


def _unchanged_from_base(results: list, plans: list) -> tuple[list, list]:
    """Layers whose W − W_base is all zero are skipped ("unchanged from base"), not rows of an invalid layer."""
    import dataclasses

    from .matrices import ALL_ZERO

    same = {(r.layer_id, r.longname) for r in results
            if r.status == "invalid" and str(r.reason).endswith(ALL_ZERO)}
    if not same:
        return results, plans
    plans = [dataclasses.replace(p, reason="unchanged from base") if (p.tensor.layer_id, p.tensor.longname) in same
             else p for p in plans]
    return [r for r in results if (r.layer_id, r.longname) not in same], plans


def describe(model: Any, *, base_model: Any = None, treatment: Treatment = HTSR, **options: Any) -> Any:
    """List every weight tensor and whether it will be analyzed (no eigenvalues computed).

    Returns
    -------
    pandas.DataFrame
        Columns ``layer_id, name, longname, layer_type, shape, dtype, N, M, Q, rf, num_evals,
        analyzed, state, reason``. ``state`` is 'analyzed', 'skipped' or 'auxiliary' (the census:
        every tensor of two or more dimensions of the input is on exactly one row, or, split
        into gates, on several analyzed rows; ``docs/formats.md``).

    Examples
    --------
    >>> import numpy as np, htsr
    >>> d = htsr.describe({"fc.weight": np.ones((20, 10)), "fc.bias": np.ones(20), "ln.weight": np.ones(10)})
    >>> d[["name", "analyzed"]].values.tolist()
    [['fc', True], ['ln', False]]
    """
    from .schema import DESCRIBE

    return DESCRIBE.frame(describe_tensors(model, base_model=base_model, treatment=treatment, **options))


def describe_tensors(model: Any, *, base_model: Any = None, treatment: Treatment = HTSR,
                     **options: Any) -> tuple[PlannedTensor, ...]:
    """:func:`describe` as typed rows (:class:`~htsr.report.PlannedTensor`); the same arguments."""
    from . import engine
    from .hub import resolve
    from .sources import open_source

    config = AnalysisConfig.from_kwargs(**options)
    source = open_source(resolve(model), reference_ids=treatment.reference_ids)
    plans = engine.plan(_with_base(source, resolve(base_model)), config, treatment)
    return tuple(row for p in plans for row in PlannedTensor.rows(p))
