"""Process figures read from /proc (Linux), the in-flight sweep, and the asyncio floor."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from benchmarks import _harness as h

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of process `pid` (all its threads); with `children`, plus
    those of its children it has waited for (prefork's replaced children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and of its live children (a prefork worker's pool processes)."""
    total = cpu_seconds(pid, children=True)
    for child in _children(pid):
        total += cpu_seconds(child, children=True)
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def rss_kb(pid: int) -> int:
    """Resident set size of `pid` (VmRSS), in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals (start, end) open at one instant: runs in flight at the peak. An end
    at the same instant as a start is counted first (the slot was free)."""
    edges = sorted(e for s, f in intervals for e in ((s, 1), (f, -1)))
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


_FLOOR = """
import asyncio, json, sys, time
n, s = int(sys.argv[1]), float(sys.argv[2])
async def main():
    t0 = time.perf_counter()
    await asyncio.gather(*(asyncio.sleep(s) for _ in range(n)))
    return time.perf_counter() - t0
print(json.dumps({"gather_s": asyncio.run(main())}))
"""


def asyncio_floor(n: int, seconds: float) -> dict[str, Any]:
    """The floor: a fresh interpreter awaits `n` asyncio.sleep(seconds) in one gather.
    `wall_s` is process start to exit (as a worker's drain wall counts its start-up),
    `gather_s` the gather alone."""
    t0 = time.monotonic()
    done = subprocess.run(
        [h.PYTHON, "-c", _FLOOR, str(n), str(seconds)],
        check=True, capture_output=True, text=True, timeout=600 + seconds,
    )  # fmt: skip
    wall = time.monotonic() - t0
    return {"n": n, "seconds": seconds, "wall_s": wall, **json.loads(done.stdout)}


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the tables or the JSON)."""
    print(f"[concurrency] {message}", file=sys.stderr, flush=True)


def watch_drain(
    label: str,
    count: Callable[[], int],
    worker: h.Worker,
    n: int,
    poll: float,
    timeout: float,
    cpu: Callable[[int], float] = cpu_seconds,
) -> dict[str, Any]:
    """Poll `count()` (runs done) every `poll` s until it reaches `n`, from a worker started
    on a filled queue. Every side is judged by the same polls:
      wall_s     worker process started -> the first poll that saw all n done (start-up in)
      startup_s  worker process started -> the first poll that saw one done
      cpu_ms_per_run  the worker's CPU from that first poll to the last, per run done in
                 between (start-up out), and cpu_s its whole CPU at the end
    """
    assert worker.proc is not None
    pid, first, cpu_first, done_first, last_note = worker.proc.pid, None, 0.0, 0, 0.0
    while True:
        done = count()
        now = time.monotonic()
        if done and first is None:
            first, cpu_first, done_first = now, cpu(pid), done
        if done >= n:
            break
        worker.check_alive()
        if now - worker.started_at > timeout:
            raise RuntimeError(f"{label}: {done}/{n} done after {timeout:g}s\n{worker.log_tail()}")
        if now - last_note >= 5.0:
            progress(f"{label}: {done}/{n} done after {now - worker.started_at:.1f}s")
            last_note = now
        time.sleep(poll)
    cpu_end = cpu(pid)
    per_run = (cpu_end - cpu_first) * 1000.0 / (n - done_first) if n > done_first else math.nan
    wall = now - worker.started_at
    progress(f"{label}: {n} done, wall {wall:.2f}s")
    return {
        "n": n,
        "wall_s": wall,
        "startup_s": (first or now) - worker.started_at,
        "runs_per_s": n / wall,
        "cpu_s": cpu_end,
        "cpu_ms_per_run": per_run,
    }
