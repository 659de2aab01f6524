"""Issue 19's targets for the asyncio pool: one worker process keeping up to `concurrency`
runs in flight on an event loop (a pool of kind asyncio: `conveyor worker --pool io`).

Every baseline runs in the same invocation (the machine is shared and noisy). Conveyor's
workers are subprocesses of CONVEYOR_POOLS='{"io": {"kind": "asyncio", "concurrency": C}}'
(C = --concurrency, default N) on a scratch database and Redis db --redis-db; raw Celery and
the peers use db --redis-db + 1; both flushed before and after. Queues are filled while no
worker runs; a drain is timed from the worker's process start to the first poll (every
--poll s, the same for every side) that sees all N done: conveyor, N rows of agent_runs
final; raw Celery, N messages acked (no result store, conveyor's delivery settings);
arq, N jobs gone from its queue; Taskiq, N results stored. Measures (--only, default all):

  capacity    N runs of bench.wait awaiting S s (--n 10000, --seconds 10). Drain wall, peak
              runs in flight from the rows' started_at/finished_at and from the pool's busy-
              slot gauge (`inspect stats` "in-flight", sampled every --gauge-interval s), all
              runs succeeded. Baseline: raw Celery's solo worker draining N no-op tasks.
              Targets: wall <= S + 1.25 x raw solo wall; peak >= 0.9 N.
  floor       the same with --floor-seconds (1) against the floor, a bare asyncio.gather of
              N asyncio.sleep in a fresh interpreter, and raw Celery workers whose task
              time.sleep()s: threads c=512 (--threads-n runs, default N) and prefork c=2
              (--prefork-n, 40). Ratios of walls (floor) and of runs/s (raw pools).
  rss         RSS per run in flight: a worker started on an empty queue and warmed up
              (--rss-warmup no-op runs) gives its idle RSS (VmRSS); then N runs await
              --rss-seconds (20; long enough for all N to be in flight at once), RSS and the
              runs `started` sampled every 0.25 s. (RSS at the most runs in flight - idle)
              / those runs. Target <= 20 KB.
  throughput  N bench.noop (async no-op) runs on one worker (--noop-concurrency, 1000: the
              io pool's default) against raw Celery's solo worker draining N no-op tasks.
              Rates: steady = (N-1) / the span of the rows' finished_at (raw: of the polls
              that saw a change), wall = N / drain wall. Target: steady ratio >= 0.8. CPU ms
              per run of each worker, from its first run done to its last (start-up out).
  roundtrip   p50/p90 of sequential round trips (benchmarks/roundtrip.py's method):
              conveyor.ping on the default pool made kind asyncio, bench.noop on the io pool,
              against raw Celery with a Redis result backend (apply_async + get; worker
              --rt-raw-pool). Target: p50 ratio <= 1.2.
  bulk        benchmarks/bulk_submit.py, when it exists, run as a subprocess (--bulk-n,
              default 2 N); its verdict reprinted. Skipped when absent.
  peers       the capacity workload on arq (max_jobs C) and Taskiq (taskiq-redis
              ListQueueBroker, --workers 1 --max-async-tasks C), one worker process each,
              on the same Redis; conveyor's capacity drain reused if it ran in this
              invocation. Target: conveyor wall / the faster peer's <= 1.0. The peers live in
              a venv of their own (benchmarks/.peers-venv, made with pip on first use).

Smoke run:  .venv/bin/python -m benchmarks.concurrency --n 500 --seconds 1 --rss-seconds 5
Run from the repository root:  .venv/bin/python -m benchmarks.concurrency [--only capacity]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness as h
from benchmarks import _procs as p
from benchmarks import _rawside
from benchmarks._aio import NOOP, WAIT, Conveyor

MEASURES = ("capacity", "floor", "rss", "throughput", "roundtrip", "bulk", "peers")
TARGETS = {
    "capacity": "wall <= S + 1.25 x raw solo wall; peak in flight >= 0.9 N; all succeeded",
    "floor": "none (ratios reported)",
    "rss": "(RSS at peak - idle) / runs in flight <= 20 KB",
    "throughput": "conveyor / raw solo runs/s (steady) >= 0.8",
    "roundtrip": "conveyor p50 / raw_redis p50 <= 1.2",
    "bulk": "bulk_submit.py's own (submit_many / send_task loop >= 10)",
    "peers": "conveyor wall / the faster peer's wall <= 1.0",
}


class Context:
    """What the measures share in one invocation: workers, both sides' state, and drains
    that more than one measure judges by (so they run once)."""

    def __init__(
        self, args: argparse.Namespace, workers: h.Workers, conveyor: Conveyor, raw_broker: str
    ) -> None:
        self.args, self.workers, self.conveyor, self.raw_broker = (
            args,
            workers,
            conveyor,
            raw_broker,
        )
        self._waits: dict[tuple[int, float], dict[str, Any]] = {}
        self._raw_solo: dict[str, Any] | None = None

    def waits(self, n: int, seconds: float) -> dict[str, Any]:
        """conveyor draining n bench.wait(seconds) on one io worker at --concurrency."""
        if (n, seconds) not in self._waits:
            c = self.args.concurrency or min(n, 10_000)
            payloads = [{"seconds": seconds, "i": i} for i in range(n)]
            label = f"conveyor io c={c} wait {seconds:g}s"
            self._waits[n, seconds] = self.conveyor.drain(self.workers, label, WAIT, payloads, c)
        return self._waits[n, seconds]

    def raw_solo(self) -> dict[str, Any]:
        """raw Celery's solo worker draining N no-op tasks (no result store)."""
        if self._raw_solo is None:
            self._raw_solo = _rawside.drain(
                self.args,
                self.workers,
                self.raw_broker,
                pool="solo",
                concurrency=1,
                n=self.args.n,
            )
        return self._raw_solo


def capacity(ctx: Context) -> dict[str, Any]:
    n, s = ctx.args.n, ctx.args.seconds
    raw = ctx.raw_solo()
    conv = ctx.waits(n, s)
    limit = s + 1.25 * raw["wall_s"]
    peak = conv["peak_in_flight_rows"]
    return {
        "n": n,
        "seconds": s,
        "conveyor": conv,
        "raw_solo": raw,
        "wall_limit_s": limit,
        "wall_met": conv["wall_s"] <= limit,
        "peak_met": peak >= 0.9 * n,
        "all_succeeded": conv["all_succeeded"],
    }


def floor(ctx: Context) -> dict[str, Any]:
    a, n, s = ctx.args, ctx.args.n, ctx.args.floor_seconds
    conv = ctx.waits(n, s)
    p.progress(f"floor: asyncio.gather of {n} sleeps of {s:g}s")
    bare = p.asyncio_floor(n, s)
    threads = _rawside.drain(
        a, ctx.workers, ctx.raw_broker, pool="threads", concurrency=512, n=a.threads_n or n, sleep=s
    )
    prefork = _rawside.drain(
        a, ctx.workers, ctx.raw_broker, pool="prefork", concurrency=2, n=a.prefork_n, sleep=s
    )
    return {
        "n": n,
        "seconds": s,
        "conveyor": conv,
        "floor": bare,
        "raw_threads": threads,
        "raw_prefork": prefork,
        "wall_over_floor": conv["wall_s"] / bare["wall_s"],
        "runs_over_gather": conv["first_start_to_last_finish_s"] / bare["gather_s"],
        "rate_over_threads": conv["runs_per_s"] / threads["runs_per_s"],
        "rate_over_prefork": conv["runs_per_s"] / prefork["runs_per_s"],
        "all_succeeded": conv["all_succeeded"],
    }


def rss(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    n = a.rss_n or a.n
    out = ctx.conveyor.rss(ctx.workers, n, a.rss_seconds, a.rss_warmup)
    return {**out, "target_met": out["kb_per_run"] <= 20.0}


def throughput(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    raw = ctx.raw_solo()
    label = f"conveyor io c={a.noop_concurrency} noop"
    conv = ctx.conveyor.drain(
        ctx.workers, label, NOOP, [{"i": i} for i in range(a.n)], a.noop_concurrency
    )
    steady = conv["steady_per_s"] / raw["steady_per_s"]
    return {
        "n": a.n,
        "conveyor": conv,
        "raw_solo": raw,
        "ratio_steady": steady,
        "ratio_wall": conv["runs_per_s"] / raw["runs_per_s"],
        "target_met": steady >= 0.8,
        "all_succeeded": conv["all_succeeded"],
    }


def roundtrip(ctx: Context) -> dict[str, Any]:
    from benchmarks._aio_roundtrip import roundtrip as measure

    out = measure(ctx.args, ctx.workers, ctx.conveyor, ctx.raw_broker)
    out["target_met"] = {name: r["p50"] <= 1.2 for name, r in out["ratios"].items()}
    return out


def bulk(ctx: Context) -> dict[str, Any]:
    script = h.REPO / "benchmarks" / "bulk_submit.py"
    if not script.exists():
        return {"skipped": "benchmarks/bulk_submit.py does not exist"}
    n = ctx.args.bulk_n or 2 * ctx.args.n
    argv = [
        h.PYTHON,
        "-m",
        "benchmarks.bulk_submit",
        "-n",
        str(n),
        "--json",
        "--redis-db",
        str(ctx.args.redis_db),
    ]
    p.progress(f"bulk: {' '.join(argv[1:])}")
    done = subprocess.run(argv, cwd=h.REPO, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        return {"skipped": f"bulk_submit failed ({done.returncode}): {done.stderr[-2000:]}"}
    out = json.loads(done.stdout)
    summary = out.get("summary", {}).get("conveyor", {})
    return {
        "n": n,
        "ratio_median": summary.get("ratio_median"),
        "target": out.get("target"),
        "target_met": out.get("target_met"),
        "result": out,
    }


def peers(ctx: Context) -> dict[str, Any]:
    from benchmarks.peers import drive

    a, n, s = ctx.args, ctx.args.n, ctx.args.seconds
    c = a.concurrency or min(n, 10_000)
    conv = ctx.waits(n, s)
    sides = {
        peer: drive.drain(a, ctx.workers, ctx.raw_broker, peer, n, s, c) for peer in drive.PEERS
    }
    faster = min(sides, key=lambda k: sides[k]["wall_s"])
    ratio = conv["wall_s"] / sides[faster]["wall_s"]
    return {
        "n": n,
        "seconds": s,
        "concurrency": c,
        "conveyor": conv,
        **sides,
        "faster_peer": faster,
        "ratio": ratio,
        "target_met": ratio <= 1.0,
    }


RUNNERS = {
    "capacity": capacity,
    "floor": floor,
    "rss": rss,
    "throughput": throughput,
    "roundtrip": roundtrip,
    "bulk": bulk,
    "peers": peers,
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = h.machine_info()
    measures: dict[str, Any] = {}
    with (
        h.scratch_database("conc") as db,
        h.scratch_redis(args.redis_db, args.redis_db + 1) as (broker, raw_broker),
        h.Workers(args.keep_logs) as workers,
    ):
        conveyor = Conveyor(args, db, broker)
        try:
            ctx = Context(args, workers, conveyor, raw_broker)
            for name in args.only:
                p.progress(f"--- {name}")
                measures[name] = RUNNERS[name](ctx)
        finally:
            conveyor.close()
    config = {k: v for k, v in vars(args).items() if k not in ("json", "keep_logs")}
    return {
        "benchmark": "concurrency",
        "machine": machine,
        "config": config,
        "targets": {k: TARGETS[k] for k in args.only},
        "measures": measures,
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks._conc_report import report

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.concurrency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--only",
        type=_measures,
        default=list(MEASURES),
        help=f"comma-separated measures to run, in this order (default all: {','.join(MEASURES)})",
    )
    add("--n", "-n", type=int, default=10_000, help="runs per drain (default 10000)")
    add("--seconds", type=float, default=10.0, help="capacity and peers: each run's wait (10)")
    add(
        "--concurrency",
        type=int,
        default=0,
        help="capacity, floor, peers: the io pool's concurrency, arq's max_jobs and Taskiq's "
        "--max-async-tasks (default N, at most 10000)",
    )
    add("--floor-seconds", type=float, default=1.0, help="floor: each run's wait (1)")
    add("--threads-n", type=int, default=0, help="floor: raw threads c=512 runs (default N)")
    add("--prefork-n", type=int, default=40, help="floor: raw prefork c=2 runs (40)")
    add("--rss-n", type=int, default=0, help="rss: runs in flight (default N)")
    add("--rss-seconds", type=float, default=20.0, help="rss: each run's wait (20)")
    add("--rss-warmup", type=int, default=20, help="rss: no-op runs before the idle sample")
    add(
        "--noop-concurrency",
        type=int,
        default=1000,
        help="throughput and roundtrip: the asyncio pools' concurrency (1000)",
    )
    add("--rt-n", type=int, default=300, help="roundtrip: round trips per side (300)")
    add("--rt-warmup", type=int, default=30, help="roundtrip: untimed round trips per side")
    add("--rt-raw-pool", default="solo", help="roundtrip: raw worker's POOL[:CONCURRENCY]")
    add("--bulk-n", type=int, default=0, help="bulk: runs per side (default 2 N)")
    add("--poll", type=float, default=0.1, help="seconds between counts of runs done (0.1)")
    add(
        "--gauge-interval",
        type=float,
        default=1.0,
        help="seconds between `inspect stats` samples of the pool's in-flight gauge; 0 skips",
    )
    add("--timeout", type=float, default=900.0, help="seconds per drain (900)")
    add(
        "--redis-db",
        type=int,
        default=1,
        help="conveyor's broker db; +1 is raw Celery's and the peers' (both flushed!) (1)",
    )
    h.add_common_args(parser)
    return h.run_main(parser, argv, run, report)


def _measures(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in MEASURES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown measure(s) {unknown}; choose from {MEASURES}")
    return names


if __name__ == "__main__":
    sys.exit(main())
