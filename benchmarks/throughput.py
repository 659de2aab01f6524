"""Drain throughput: N tasks queued while no worker runs, then one worker drains them.

For each mode (pool kind : concurrency) and side, in a fresh state:
  1. pre-fill the queue with N tasks (no worker running);
  2. start one worker subprocess and poll PostgreSQL until N runs are recorded finished;
  3. stop the worker (SIGTERM, then SIGKILL of its process group).

Sides:
  conveyor - Client.submit_many("conveyor.ping", ...), `conveyor worker --pool default`;
             done = N rows in agent_runs with status 'succeeded'
  raw_pg   - plain Celery with its own PostgreSQL result backend (db+postgresql+psycopg://),
             same pool kind and concurrency; done = N rows in celery_taskmeta with 'SUCCESS'
  raw_redis - only with --ceiling: plain Celery with a Redis result backend and no database at
             all, same pool kind and concurrency; done = N result keys in its Redis db. It is
             the ceiling: what Celery itself drains when recording costs next to nothing

Rates reported (nothing subtracted from "wall"):
  wall    N / (last run finished - worker process started), start-up included
  steady  (N - 1) / (last finished_at - first finished_at), from the rows' own timestamps
  startup first run seen finished - worker process started (poll resolution --poll)
Target: conveyor / raw_pg >= 3, for prefork c=2 and threads c=2. The verdict uses the
steady ratio when start-up takes more than half of either side's wall time, else wall.

Run from the repository root:  .venv/bin/python -m benchmarks.throughput [-n 3000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import redis

from benchmarks import _harness as h

TARGET = 3.0
SQL = {
    "conveyor": (
        "SELECT count(*) FROM agent_runs WHERE status = 'succeeded'",
        "SELECT extract(epoch FROM max(finished_at) - min(finished_at)) "
        "FROM agent_runs WHERE status = 'succeeded'",
        "TRUNCATE agent_runs",
    ),
    "raw_pg": (
        "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'",
        "SELECT extract(epoch FROM max(date_done) - min(date_done)) "
        "FROM celery_taskmeta WHERE status = 'SUCCESS'",
        "TRUNCATE celery_taskmeta",
    ),
}


class Tally:
    """Counts a side's finished runs and the span of their own finish timestamps."""

    def __init__(self, side: str, conn: psycopg.Connection[Any], results_url: str) -> None:
        self.side, self.conn = side, conn
        self.redis = redis.Redis.from_url(results_url) if side == "raw_redis" else None

    def reset(self) -> None:
        if self.redis is not None:
            self.redis.flushdb()
        else:
            self.conn.execute(SQL[self.side][2])

    def count(self) -> int:
        if self.redis is not None:
            return int(self.redis.dbsize())
        return int(self.conn.execute(SQL[self.side][0]).fetchone()[0])  # type: ignore[index]

    def span(self) -> float:
        if self.redis is None:
            return float(self.conn.execute(SQL[self.side][1]).fetchone()[0] or 0.0)  # type: ignore[index]
        keys = list(self.redis.scan_iter("celery-task-meta-*", count=1000))
        metas = [json.loads(v) for v in self.redis.mget(keys) if v]
        done = sorted(datetime.fromisoformat(m["date_done"]) for m in metas)
        return (done[-1] - done[0]).total_seconds() if done else 0.0


def fill_conveyor(client: Any, n: int) -> None:
    client.submit_many("conveyor.ping", ({"i": i} for i in range(n)))


def fill_raw(n: int, broker: str, backend: str, reliable: bool) -> None:
    from benchmarks.raw_app import TASK_NAME, make_app

    app = make_app(broker, backend, reliable=reliable)
    if backend.startswith("db+"):
        app.backend.ResultSession().close()  # type: ignore[attr-defined]  # makes celery_taskmeta
    task = app.tasks[TASK_NAME]
    with app.producer_or_acquire() as producer:
        for i in range(n):
            task.apply_async(kwargs={"i": i}, producer=producer)
    app.close()


def drain(tally: Tally, worker: h.Worker, n: int, poll: float, timeout: float) -> dict[str, Any]:
    first = None
    while True:
        done = tally.count()
        now = time.monotonic()
        if done and first is None:
            first = now
        if done >= n:
            break
        worker.check_alive()
        if now - worker.started_at > timeout:
            raise RuntimeError(
                f"{tally.side}: {done}/{n} finished after {timeout:g}s\n{worker.log_tail()}"
            )
        time.sleep(poll)
    wall = now - worker.started_at
    span = tally.span()
    return {
        "n": n,
        "wall_s": wall,
        "startup_s": (first or now) - worker.started_at,
        "span_s": span,
        "wall_rate": n / wall,
        "steady_rate": (n - 1) / span if span > 0 else float("nan"),
    }


def trial(
    side: str,
    mode: tuple[str, int],
    args: argparse.Namespace,
    env: dict[str, Any],
    workers: h.Workers,
) -> dict[str, Any]:
    pool, conc = mode
    broker = env["brokers"][side]
    h.flush_redis(broker)
    backend = env["raw_backends"].get(side, "")
    with psycopg.connect(env["admin_url"], autocommit=True) as conn:
        tally = Tally(side, conn, backend)
        if side == "raw_pg":
            fill_raw(0, broker, backend, args.raw_reliable)  # table exists
        tally.reset()
        t0 = time.monotonic()
        if side == "conveyor":
            fill_conveyor(env["client"], args.count)
            worker_env = h.conveyor_env(broker, env["conveyor_url"], env["prefix"], pool, conc)
            argv = h.conveyor_worker_argv(conc, args.loglevel)
        else:
            fill_raw(args.count, broker, backend, args.raw_reliable)
            worker_env = h.raw_env(broker, backend, args.raw_reliable)
            argv = h.raw_worker_argv(pool, conc, args.loglevel, side.replace("_", ""))
        fill_s = time.monotonic() - t0
        worker = workers.start(f"{side}-{pool}-{conc}-{time.time_ns()}", argv, worker_env)
        try:
            result = drain(tally, worker, args.count, args.poll, args.timeout)
        finally:
            workers.stop(worker)
    return {"side": side, "pool": pool, "concurrency": conc, "fill_s": fill_s, **result}


def summarise(trials: list[dict[str, Any]], modes: list[tuple[str, int]]) -> list[dict[str, Any]]:
    out = []
    for pool, conc in modes:
        mine = [t for t in trials if (t["pool"], t["concurrency"]) == (pool, conc)]

        def median(side: str, key: str, rows: list[dict[str, Any]] = mine) -> float:
            return float(statistics.median(t[key] for t in rows if t["side"] == side))

        wall = median("conveyor", "wall_rate") / median("raw_pg", "wall_rate")
        steady = median("conveyor", "steady_rate") / median("raw_pg", "steady_rate")
        startup_share = max(t["startup_s"] / t["wall_s"] for t in mine)
        basis = "steady" if startup_share > 0.5 else "wall"
        ratio = steady if basis == "steady" else wall
        rate_key = f"{basis}_rate"
        ceiling = None
        if any(t["side"] == "raw_redis" for t in mine):
            ceiling = {
                "raw_redis_over_raw_pg": median("raw_redis", rate_key) / median("raw_pg", rate_key),
                "conveyor_over_raw_redis": median("conveyor", rate_key)
                / median("raw_redis", rate_key),
            }
        out.append(
            {
                "mode": f"{pool} c={conc}",
                "ratio_wall": wall,
                "ratio_steady": steady,
                "basis": basis,
                "ratio": ratio,
                "target_met": ratio >= TARGET,
                "ceiling": ceiling,
            }
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.app import create_app
    from conveyor.client import Client
    from conveyor.models.migrate import upgrade

    machine = h.machine_info()
    modes = []
    for spec in args.modes:
        pool, _, conc = spec.partition(":")
        modes.append((pool, int(conc or 2)))
    trials: list[dict[str, Any]] = []
    with (
        h.scratch_database("tp") as db,
        h.scratch_redis(args.redis_db, args.redis_db + 1, args.redis_db + 2) as brokers,
        h.Workers(args.keep_logs) as workers,
    ):
        env: dict[str, Any] = {
            "admin_url": h.pg_url(db),
            "conveyor_url": h.pg_url(db, "postgresql+psycopg"),
            "raw_backends": {
                "raw_pg": h.pg_url(db, "db+postgresql+psycopg"),
                "raw_redis": brokers[2],
            },
            "brokers": {"conveyor": brokers[0], "raw_pg": brokers[1], "raw_redis": brokers[1]},
        }
        upgrade(env["conveyor_url"])
        # One client for every trial (the queues are flushed between trials); the pool kind
        # in its settings only matters to workers, which get theirs through the environment.
        env["prefix"] = h.unique("tp") + "."
        settings = h.conveyor_settings(brokers[0], env["conveyor_url"], env["prefix"], "prefork", 2)
        env["client"] = Client(create_app(settings))
        for rep in range(args.repeat):
            for mode in modes:
                sides = ["conveyor", "raw_pg"] + (["raw_redis"] if args.ceiling else [])
                if rep % 2:
                    sides.reverse()
                for side in sides:
                    trials.append(trial(side, mode, args, env, workers))
                    if not args.json:
                        t = trials[-1]
                        print(
                            f"[{rep + 1}/{args.repeat}] {side:<8} {mode[0]} c={mode[1]}: "
                            f"wall {t['wall_rate']:.1f}/s, steady {t['steady_rate']:.1f}/s, "
                            f"startup {t['startup_s']:.2f}s",
                            file=sys.stderr,
                        )
        env["client"].close()
    return {
        "benchmark": "throughput",
        "machine": machine,
        "config": {
            "count": args.count,
            "modes": args.modes,
            "repeat": args.repeat,
            "loglevel": args.loglevel,
            "raw_reliable": args.raw_reliable,
            "ceiling": args.ceiling,
        },
        "trials": trials,
        "summary": summarise(trials, modes),
        "target": f"conveyor / raw_pg tasks/s >= {TARGET}",
    }


def report(result: dict[str, Any]) -> None:
    rows = [
        [
            f"{t['pool']} c={t['concurrency']}",
            t["side"],
            t["n"],
            t["fill_s"],
            t["startup_s"],
            t["wall_s"],
            t["wall_rate"],
            t["steady_rate"],
        ]
        for t in result["trials"]
    ]
    h.print_table(
        f"Drain throughput ({result['machine']['date']})",
        ["mode", "side", "N", "fill s", "startup s", "wall s", "wall/s", "steady/s"],
        rows,
    )
    rows = [
        [
            s["mode"],
            s["ratio_wall"],
            s["ratio_steady"],
            s["basis"],
            "MET" if s["target_met"] else "MISSED",
        ]
        for s in result["summary"]
    ]
    h.print_table(
        f"conveyor / raw_pg (median of repeats; target >= {TARGET})",
        ["mode", "ratio wall", "ratio steady", "verdict on", "target"],
        rows,
    )
    ceilings = [s for s in result["summary"] if s["ceiling"]]
    if ceilings:
        h.print_table(
            "ceiling: raw Celery with only Redis (same basis as the verdict)",
            ["mode", "raw_redis / raw_pg", "conveyor / raw_redis"],
            [
                [
                    s["mode"],
                    s["ceiling"]["raw_redis_over_raw_pg"],
                    s["ceiling"]["conveyor_over_raw_redis"],
                ]
                for s in ceilings
            ],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("-n", "--count", type=int, default=3000, help="tasks per drain")
    parser.add_argument(
        "--modes", nargs="+", default=["prefork:2", "threads:2"], help="pool:concurrency pairs"
    )
    parser.add_argument("--repeat", type=int, default=1, help="trials per mode and side")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between DB counts")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per drain")
    parser.add_argument(
        "--redis-db", type=int, default=13, help="first of three Redis db indexes used (flushed!)"
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also drain raw Celery with a Redis result backend and no database (the ceiling)",
    )
    h.add_common_args(parser)
    return h.run_main(parser, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
