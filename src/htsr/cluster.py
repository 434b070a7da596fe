"""Scale-out on Dask: one task per weight tensor, each read by the worker that computes it.

``htsr.analyze(path, dask=...)`` (CLI ``--dask``) takes

==========================  ===================================================
``"local"`` or ``True``     an embedded ``distributed.LocalCluster`` for the
                            call: ``workers`` processes (0: one per core), one
                            thread each; closed afterwards
``"tcp://host:8786"``       the scheduler at that address (``dask scheduler``
                            and ``dask worker ADDRESS`` started by hand)
a ``distributed.Client``    used as it is
==========================  ===================================================

For file sources (safetensors, HF folders, npz) a task carries only the path,
key and offsets — the worker reads the tensor itself (large matrices in
blocks, see :mod:`htsr.blocked`), so every worker must see the same path. For
in-memory sources (modules, dicts) the tensor is shipped with the task. Each
task pins BLAS to one thread, as the in-process engine does, so the numbers are
bit-identical to a serial run, and rows come back in the source's order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from .blas import blas_single_thread
from .config import AnalysisConfig
from .engine import Plan, analyze_plan, load_tensor
from .errors import OptionError
from .progress import Progress
from .results import LayerResult
from .treatment import HTSR, Treatment


def _task(plan: Plan, config: AnalysisConfig, treatment: Treatment) -> list[LayerResult]:
    import dataclasses

    # one Dask task per layer, one core per task: a big layer's Gram tiles stay on this thread (same bits)
    with blas_single_thread():
        return analyze_plan(plan, load_tensor(plan, blocks=True), dataclasses.replace(config, workers=1),
                            treatment=treatment)


def parse_dask(value: Any) -> Any:
    """Check a ``dask=`` value: None/False (no Dask), True or ``'local'``, an address string, or a Client."""
    if value is None or value is False:
        return value
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise OptionError("The 'dask' option needs Dask's distributed package: pip install 'htsr[dask]'")
    if value is True:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "local":
            return "local"
        if "://" in text or ":" in text:
            return text
        raise OptionError(f"The 'dask' option must be 'local', a scheduler address such as "
                          f"tcp://host:8786, or a distributed.Client; got {value!r}.")
    if hasattr(value, "submit") and hasattr(value, "gather"):
        return value
    raise OptionError(f"The 'dask' option must be 'local', a scheduler address or a distributed.Client; "
                      f"got {type(value).__name__}.")


def _connect(target: Any, config: AnalysisConfig) -> tuple[Any, list]:
    """The client to use and what to close afterwards."""
    from distributed import Client, LocalCluster

    if target is True or target == "local":
        n = config.workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        return client, [client, cluster]
    if isinstance(target, str):
        client = Client(target, timeout="30s")
        return client, [client]
    return target, []


def run_dask(plans: list[Plan], config: AnalysisConfig, client: Any, progress: Progress | None = None,
             treatment: Treatment = HTSR) -> Iterator[list[LayerResult]]:
    """Submit one task per planned layer to ``client`` (see :func:`parse_dask`); outputs in plan order."""
    todo = [p for p in plans if not p.reason]
    if not todo:
        return
    import uuid

    client, owned = _connect(parse_dask(client), config)
    run_id = uuid.uuid4().hex[:12]  # keys unique per call: two runs may share one cluster
    try:
        futures = [client.submit(_task, p, config, treatment, pure=False, key=f"htsr-{run_id}-{k}-{p.tensor.layer_id}")
                   for k, p in enumerate(todo)]
        for p, fut in zip(todo, futures):
            out = fut.result()
            fut.release()
            if progress is not None:
                progress.update(p.tensor.longname)
            yield out
    finally:
        for thing in owned:
            thing.close()
