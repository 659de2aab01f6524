"""Drain throughput: N tasks queued while no worker runs, then one worker drains them.

For each mode (pool kind : concurrency) and side, in a fresh state:
  1. pre-fill the queue with N tasks (no worker running);
  2. start one worker subprocess and poll PostgreSQL until N runs are recorded finished;
  3. stop the worker (SIGTERM, then SIGKILL of its process group).

Sides (every worker: same pool kind and concurrency; all use Redis db --redis-db as broker,
flushed before each trial):
  conveyor         Client.submit_many("conveyor.ping", ...), `conveyor worker --pool default`;
                   an idempotent agent (no claim); done = N rows of agent_runs 'succeeded'
  conveyor_default the same with "bench.ping" (benchmarks/agents.py): conveyor.ping's body as
                   a default agent, claimed in PostgreSQL before it runs (one round trip and
                   the `started` row), as every agent without idempotent=True
  raw              the primary baseline: plain Celery with conveyor's delivery settings
                   (acks_late, reject_on_worker_lost, prefetch 1, JSON, conveyor's broker
                   transport options) and NO result store; done = N messages acked (nothing
                   left in the queue's priority lists nor in kombu's unacked hash)
  raw_pg           secondary: the same plus Celery's own PostgreSQL result backend
                   (db+postgresql+psycopg://); done = N rows in celery_taskmeta 'SUCCESS'
  raw_redis        only with --ceiling: the same with a Redis result backend (db --redis-db
                   + 1); done = N result keys there
--raw-celery-defaults gives every raw side Celery's defaults instead (early acks, prefetch 4;
`raw` then counts a message done when its worker has taken it, up to 8 early).

Rates reported (nothing subtracted from "wall"):
  wall    N / (last run finished - worker process started), start-up included
  steady  (N - 1) / (last finished_at - first finished_at), from the rows' own timestamps
          (`raw` has no rows: first and last poll that saw a change, +-poll)
  startup first run seen finished - worker process started (poll resolution --poll)
Target: conveyor / raw >= 3 (restated on the primary baseline in issue 17; it was
conveyor / raw_pg), for prefork c=2 and threads c=2, judged for both conveyor sides; the
ratio to raw_pg is printed beside it. The verdict uses the steady ratio when start-up takes
more than half of a trial's wall time, else wall.

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
BASELINE, SECONDARY = "raw", "raw_pg"
AGENTS = {"conveyor": "conveyor.ping", "conveyor_default": "bench.ping"}
RUNS_SQL = (
    "SELECT count(*) FROM agent_runs WHERE status = 'succeeded'",
    "SELECT extract(epoch FROM max(finished_at) - min(finished_at)) "
    "FROM agent_runs WHERE status = 'succeeded'",
    "TRUNCATE agent_runs",
)
SQL = {
    "conveyor": RUNS_SQL,
    "conveyor_default": RUNS_SQL,
    "raw_pg": (
        "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'",
        "SELECT extract(epoch FROM max(date_done) - min(date_done)) "
        "FROM celery_taskmeta WHERE status = 'SUCCESS'",
        "TRUNCATE celery_taskmeta",
    ),
}


class Tally:
    """Counts a side's finished runs and the span of their own finish timestamps."""

    def __init__(
        self, side: str, conn: psycopg.Connection[Any], results_url: str, broker: str, n: int
    ) -> None:
        self.side, self.conn, self.n = side, conn, n
        self.redis = redis.Redis.from_url(results_url) if side == "raw_redis" else None
        self.broker = redis.Redis.from_url(broker) if side == BASELINE else None
        self.changes: list[float] = []
        self._last = 0

    def reset(self) -> None:
        if self.redis is not None:
            self.redis.flushdb()
        elif self.side in SQL:
            self.conn.execute(SQL[self.side][2])

    def count(self) -> int:
        if self.broker is not None:
            return self._acked()
        if self.redis is not None:
            return int(self.redis.dbsize())
        return int(self.conn.execute(SQL[self.side][0]).fetchone()[0])  # type: ignore[index]

    def _acked(self) -> int:
        """No result store: N minus what is still queued (every priority list of the queue)
        or delivered but not acked (kombu's unacked hash: acks are late)."""
        pipe = self.broker.pipeline(transaction=False)  # type: ignore[union-attr]
        for key in self.broker.scan_iter(_type="list", count=1000):  # type: ignore[union-attr]
            pipe.llen(key)
        pipe.hlen("unacked")
        done = self.n - sum(int(x) for x in pipe.execute())
        if done != self._last:
            self.changes.append(time.monotonic())
            self._last = done
        return done

    def span(self) -> float:
        if self.broker is not None:
            return self.changes[-1] - self.changes[0] if len(self.changes) > 1 else 0.0
        if self.redis is None:
            return float(self.conn.execute(SQL[self.side][1]).fetchone()[0] or 0.0)  # type: ignore[index]
        keys = list(self.redis.scan_iter("celery-task-meta-*", count=1000))
        metas = [json.loads(v) for v in self.redis.mget(keys) if v]
        done = sorted(datetime.fromisoformat(m["date_done"]) for m in metas)
        return (done[-1] - done[0]).total_seconds() if done else 0.0


def fill_conveyor(client: Any, agent: str, n: int) -> None:
    client.submit_many(agent, ({"i": i} for i in range(n)))


def fill_raw(n: int, broker: str, backend: str, config: dict[str, Any]) -> None:
    from benchmarks.raw_app import TASK_NAME, make_app

    app = make_app(broker, backend, config=config)
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
    broker = env["broker"]
    h.flush_redis(broker)
    backend = env["raw_backends"].get(side, "")
    with psycopg.connect(env["admin_url"], autocommit=True) as conn:
        tally = Tally(side, conn, backend, broker, args.count)
        if side == "raw_pg":
            fill_raw(0, broker, backend, env["raw_config"])  # table exists
        tally.reset()
        t0 = time.monotonic()
        if side in AGENTS:
            fill_conveyor(env["client"], AGENTS[side], args.count)
            worker_env = h.conveyor_env(broker, env["conveyor_url"], env["prefix"], pool, conc)
            argv = h.conveyor_worker_argv(conc, args.loglevel)
        else:
            fill_raw(args.count, broker, backend, env["raw_config"])
            worker_env = h.raw_env(broker, backend, config=env["raw_config"])
            argv = h.raw_worker_argv(pool, conc, args.loglevel, side.replace("_", ""))
        fill_s = time.monotonic() - t0
        worker = workers.start(f"{side}-{pool}-{conc}-{time.time_ns()}", argv, worker_env)
        try:
            result = drain(tally, worker, args.count, args.poll, args.timeout)
        finally:
            workers.stop(worker)
    return {"side": side, "pool": pool, "concurrency": conc, "fill_s": fill_s, **result}


def summarise(
    trials: list[dict[str, Any]], modes: list[tuple[str, int]], terms: str
) -> list[dict[str, Any]]:
    out = []
    for pool, conc in modes:
        mine = [t for t in trials if (t["pool"], t["concurrency"]) == (pool, conc)]

        def median(side: str, key: str, rows: list[dict[str, Any]] = mine) -> float:
            return float(statistics.median(t[key] for t in rows if t["side"] == side))

        startup_share = max(t["startup_s"] / t["wall_s"] for t in mine)
        basis = "steady" if startup_share > 0.5 else "wall"
        rate_key = f"{basis}_rate"
        sides = {}
        for side in AGENTS:
            ratios = {
                f"{base}_{key}": median(side, f"{key}_rate") / median(base, f"{key}_rate")
                for base in (BASELINE, SECONDARY)
                for key in ("wall", "steady")
            }
            ratio = ratios[f"{BASELINE}_{basis}"]
            sides[side] = {
                "agent": AGENTS[side],
                "rate": median(side, rate_key),
                **ratios,
                "ratio": ratio,
                "ratio_secondary": ratios[f"{SECONDARY}_{basis}"],
                "target_met": ratio >= TARGET,
            }
        ceiling = None
        if any(t["side"] == "raw_redis" for t in mine):
            ceiling = {
                "raw_redis_over_raw": median("raw_redis", rate_key) / median(BASELINE, rate_key),
                "raw_redis_over_raw_pg": median("raw_redis", rate_key)
                / median(SECONDARY, rate_key),
            }
        out.append(
            {
                "mode": f"{pool} c={conc}",
                "terms": f"{pool} c={conc} on both sides, {terms}",
                "basis": basis,
                "rates": {
                    side: median(side, rate_key) for side in dict.fromkeys(t["side"] for t in mine)
                },
                "sides": sides,
                # the idempotent side, under the names earlier JSON readers used
                "ratio": sides["conveyor"]["ratio"],
                "target_met": sides["conveyor"]["target_met"],
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
        h.scratch_redis(args.redis_db, args.redis_db + 1) as (broker, results),
        h.Workers(args.keep_logs) as workers,
    ):
        env: dict[str, Any] = {
            "admin_url": h.pg_url(db),
            "conveyor_url": h.pg_url(db, "postgresql+psycopg"),
            "raw_backends": {"raw_pg": h.pg_url(db, "db+postgresql+psycopg"), "raw_redis": results},
            "broker": broker,
            "raw_config": h.raw_config(args, broker),
        }
        upgrade(env["conveyor_url"])
        # One client for every trial (the queues are flushed between trials); the pool kind
        # in its settings only matters to workers, which get theirs through the environment.
        env["prefix"] = h.unique("tp") + "."
        settings = h.conveyor_settings(broker, env["conveyor_url"], env["prefix"], "prefork", 2)
        env["client"] = Client(create_app(settings))
        all_sides = [*AGENTS, BASELINE, SECONDARY] + (["raw_redis"] if args.ceiling else [])
        for rep in range(args.repeat):
            for mode in modes:
                sides = all_sides[::-1] if rep % 2 else all_sides
                for side in sides:
                    trials.append(trial(side, mode, args, env, workers))
                    if not args.json:
                        t = trials[-1]
                        print(
                            f"[{rep + 1}/{args.repeat}] {side:<16} {mode[0]} c={mode[1]}: "
                            f"wall {t['wall_rate']:.1f}/s, steady {t['steady_rate']:.1f}/s, "
                            f"startup {t['startup_s']:.2f}s",
                            file=sys.stderr,
                        )
        env["client"].close()
    terms = f"{h.raw_terms(args)}, N={args.count}, median of {args.repeat}"
    return {
        "benchmark": "throughput",
        "machine": machine,
        "config": {
            "count": args.count,
            "modes": args.modes,
            "repeat": args.repeat,
            "loglevel": args.loglevel,
            "raw_delivery": "celery defaults" if args.raw_celery_defaults else "conveyor's",
            "ceiling": args.ceiling,
        },
        "trials": trials,
        "summary": summarise(trials, modes, terms),
        "target": f"conveyor / {BASELINE} tasks/s >= {TARGET}",
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
        f"Drain throughput ({result['machine']['date']}, load "
        f"{result['machine']['loadavg_at_start']})",
        ["mode", "side", "N", "fill s", "startup s", "wall s", "wall/s", "steady/s"],
        rows,
    )
    rows = [
        [
            s["mode"],
            side,
            r["agent"],
            r["rate"],
            r[f"{BASELINE}_wall"],
            r[f"{BASELINE}_steady"],
            r[f"{SECONDARY}_wall"],
            r[f"{SECONDARY}_steady"],
            s["basis"],
        ]
        for s in result["summary"]
        for side, r in s["sides"].items()
    ]
    h.print_table(
        "conveyor / raw Celery (medians of repeats)",
        ["mode", "side", "agent", "tasks/s", "/ raw wall", "/ raw steady", "/ raw_pg wall",
         "/ raw_pg steady", "verdict on"],
        rows,
    )  # fmt: skip
    for s in result["summary"]:
        for r in s["sides"].values():
            kind = "idempotent, no claim" if r["agent"] == "conveyor.ping" else "default agent"
            print(
                f"verdict: {r['agent']} ({kind}) / raw = {r['ratio']:.2f} on {s['basis']} "
                f"(/ raw_pg {r['ratio_secondary']:.2f}) [{s['terms']}] (target >= {TARGET}: "
                f"{'MET' if r['target_met'] else 'MISSED'})"
            )
    ceilings = [s for s in result["summary"] if s["ceiling"]]
    if ceilings:
        h.print_table(
            "raw Celery with a Redis result backend (same basis as the verdict)",
            ["mode", "raw_redis / raw", "raw_redis / raw_pg"],
            [
                [
                    s["mode"],
                    s["ceiling"]["raw_redis_over_raw"],
                    s["ceiling"]["raw_redis_over_raw_pg"],
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
        "--redis-db",
        type=int,
        default=13,
        help="broker db of every side; +1 holds --ceiling's results (both flushed!)",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also drain raw Celery with a Redis result backend and no database",
    )
    h.add_common_args(parser)
    return h.run_main(parser, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
