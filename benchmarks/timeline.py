"""Where a run's cores go: run a command and print each of its threads' CPU once a second.

Usage (from the repository root)::

    python benchmarks/timeline.py [--every 1.0] -- python -m htsr analyze DIR --quiet

Every ``--every`` seconds, read from ``/proc/PID/task/*/stat`` by this process (so a
thread holding the GIL in the child cannot delay the sampling), one line: seconds since
the start, the cores the whole process used over the interval, and the CPU seconds of
each thread that ran (thread ids' last three digits). Long stretches near 1.0 on a
multi-core machine are cores left idle. Linux only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def _cpu(path: str, tick: int) -> float:
    """user + system seconds from a ``/proc/.../stat`` file."""
    with open(path) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=float, default=1.0, help="seconds between samples (default 1)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command after --")
    tick = os.sysconf("SC_CLK_TCK")
    child = subprocess.Popen(cmd)
    t0 = last_t = time.perf_counter()
    last_total, seen = 0.0, {}
    while child.poll() is None:
        time.sleep(args.every)
        try:
            total = _cpu(f"/proc/{child.pid}/stat", tick)
            threads = {}
            for tid in os.listdir(f"/proc/{child.pid}/task"):
                try:
                    threads[tid] = _cpu(f"/proc/{child.pid}/task/{tid}/stat", tick)
                except OSError:  # the thread ended meanwhile
                    continue
        except OSError:  # the process ended meanwhile
            break
        now = time.perf_counter()
        used = {tid[-3:]: round(c - seen.get(tid, 0.0), 2) for tid, c in threads.items() if c - seen.get(tid, 0.0) > 0.05}
        print(f"{now - t0:7.1f} s  cores {(total - last_total) / (now - last_t):4.2f}  {used}", flush=True)
        seen.update(threads)
        last_total, last_t = total, now
    rc = child.wait()
    print(f"exit {rc}, wall {time.perf_counter() - t0:.1f} s", flush=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
