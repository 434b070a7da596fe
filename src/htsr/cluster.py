"""Scale-out on Dask: one task per weight tensor, each read by the worker that computes it.

Pass a ``distributed.Client`` as ``htsr.analyze(path, dask=client)``; ``dask=True``
starts an embedded local cluster for the call and closes it afterwards. For
file sources (safetensors, HF folders, npz) a task carries only the path,
key and offsets — the worker reads the tensor itself, so every worker must
see the same path. For in-memory sources (modules, dicts) the tensor is
shipped with the task. Rows come back in the source's order.
"""

from __future__ import annotations

from typing import Any, Iterator

from .config import AnalysisConfig
from .engine import Plan, Progress, analyze_plan, load_tensor
from .results import LayerResult


def _task(plan: Plan, config: AnalysisConfig) -> list[LayerResult]:
    return analyze_plan(plan, load_tensor(plan), config)


def run_dask(plans: list[Plan], config: AnalysisConfig, client: Any, progress: Progress | None = None
             ) -> Iterator[list[LayerResult]]:
    """Submit one task per planned layer to ``client`` (``True``: an embedded local cluster)."""
    todo = [p for p in plans if not p.reason]
    if not todo:
        return
    own = None
    if client is True:
        from distributed import Client, LocalCluster

        own = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
        client = Client(own)
    try:
        futures = [client.submit(_task, p, config, pure=False, key=f"htsr-{k}-{p.tensor.layer_id}")
                   for k, p in enumerate(todo)]
        for p, fut in zip(todo, futures):
            out = fut.result()
            if progress is not None:
                progress.update(p.tensor.longname)
            yield out
    finally:
        if own is not None:
            client.close()
            own.close()
