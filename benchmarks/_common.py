"""Helpers shared by the benchmark scripts: timing, CPU utilization, the reference in a subprocess.

The reference tool (weightwatcher 0.7.7) is never imported here: it runs in
its own interpreter, ``$WW_PYTHON`` (a scratch virtualenv outside the
repository, see tests/data/README.md), and reports its timings as JSON on stdout. When
that interpreter or its ``weightwatcher`` is missing, the reference columns
are skipped with a note.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable



@dataclass
class Timing:
    """Best wall time of several runs and the CPU utilization (process CPU seconds / wall seconds) of that run."""

    wall: float
    cpu_util: float
    runs: list[float]

    def __str__(self) -> str:
        return f"{self.wall:.3f} s (cpu {self.cpu_util:.2f} cores; runs {', '.join(f'{r:.2f}' for r in self.runs)})"


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def best_of(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> Timing:
    """Run ``fn`` ``warmup`` + ``repeat`` times; the fastest run and its CPU utilization."""
    for _ in range(warmup):
        fn()
    runs, utils = [], []
    for _ in range(repeat):
        c0, t0 = _cpu_seconds(), time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        runs.append(wall)
        utils.append((_cpu_seconds() - c0) / wall if wall > 0 else 0.0)
    k = min(range(len(runs)), key=runs.__getitem__)
    return Timing(runs[k], utils[k], runs)


def machine() -> str:
    """One line naming this machine: CPU model, core count, load average now."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cores, load {load:.2f}"


def reference_python() -> tuple[str | None, str]:
    """(interpreter, note): the reference's interpreter if it imports weightwatcher, else None and why."""
    exe = os.environ.get("WW_PYTHON", "")
    if not exe:
        return None, "reference skipped: set WW_PYTHON to an interpreter with weightwatcher==0.7.7"
    if not Path(exe).exists():
        return None, f"reference skipped: {exe} not found (WW_PYTHON)"
    probe = subprocess.run([exe, "-c", "import weightwatcher"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"reference skipped: {exe} cannot import weightwatcher"
    return exe, ""


def run_reference(script: str, args: list[str], timeout: float = 3600) -> dict:
    """Run ``script`` (Python source) in the reference's interpreter; its last stdout line is JSON."""
    exe, note = reference_python()
    if exe is None:
        return {"skipped": note}
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([exe, "-c", script, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        return {"skipped": f"reference failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row(workload: str, ref: float | None, ours: float, floor: float | None, note: str = "") -> str:
    """A markdown table row: workload | reference | htsr | ratio | floor | htsr/floor | note."""
    r = f"{ref:.3f} s" if ref else "—"
    ratio = f"{ref / ours:.1f}×" if ref else "—"
    f = f"{floor:.3f} s" if floor else "—"
    over = f"{ours / floor:.2f}" if floor else "—"
    return f"| {workload} | {r} | {ours:.3f} s | {ratio} | {f} | {over} | {note} |"


HEADER = ("| workload | reference | htsr | speed-up | floor | htsr/floor | note |\n"
          "|---|---|---|---|---|---|---|")


def banner(title: str) -> None:
    print(f"# {title}")
    print(f"# machine: {machine()}; python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
