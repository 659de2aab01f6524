"""Bulk submit: Client.submit_many of N runs versus a plain Celery send_task loop of N.

No worker runs: this times publishing (and, for conveyor, recording) only. Both sides use one
Redis db (--redis-db, flushed before each side of each trial; the raw side on its own queue),
and conveyor a scratch PostgreSQL database (migrated; agent_runs emptied before each trial).
--trials rounds, the order of the sides rotating each round.

Sides:
  raw        the baseline: a plain Celery app (benchmarks/raw_app.py; conveyor's delivery
             settings unless --raw-celery-defaults; no result store unless --raw-backend
             redis), `app.send_task("raw.ping", kwargs={"i": i})` N times
  conveyor   `client.submit_many("bench.ping", ({"i": i} for i in range(N)),
             chunk_size=--chunk)`: every payload validated and size-checked, N messages built
             by Celery and pushed in Redis pipelines, N `queued` rows
  keyed      only with --keyed: the same with an idempotency key per run (inserted and
             published in one transaction per chunk, so no overlap of the two)
  previous   only with --previous: the loop submit_many ran before issue 19 (a NewRun per
             run, `app.send_task` per run on one producer, then `RunRepository.enqueue`)
Each conveyor side is checked after each trial: N messages in its queue, N rows.
Target (issue 19): conveyor / raw >= 10 at N = 20,000.

Run from the repository root:  .venv/bin/python -m benchmarks.bulk_submit [-n 20000] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import redis

from benchmarks import _harness as h

TARGET = 10.0
BASELINE = "raw"
AGENT = "bench.ping"


def previous_submit_many(
    client: Any, agent: str, payloads: list[dict[str, Any]], chunk: int
) -> None:
    """Client.submit_many as it was before issue 19, for the before/after figures."""
    from conveyor.client import _check_message_size
    from conveyor.runs.headers import HEADER_ENQUEUED_AT, HEADER_IDEMPOTENCY_KEY
    from conveyor.runs.records import NewRun

    app = client.app
    spec = app.agents.get(agent)
    items = [dict(p) for p in payloads]
    for item in items:
        spec.validate_input(item, app.validation_context)
        _check_message_size(agent, item, app.settings.max_message_bytes)
    queue = app.agent_queue(spec)
    client.waiter.listen()
    for start in range(0, len(items), chunk):
        now = datetime.now(UTC)
        batch = [
            NewRun(id=str(uuid.uuid4()), agent=agent, pool=spec.pool, queue=queue,
                   input=spec.recorded_input(p), enqueued_at=now)
            for p in items[start : start + chunk]
        ]  # fmt: skip
        by_id = {run.id: p for run, p in zip(batch, items[start : start + chunk], strict=True)}

        def publish(new: list[Any], by_id: dict[str, Any] = by_id) -> None:
            with app.producer_or_acquire() as producer:
                for run in new:
                    app.send_task(
                        agent, kwargs=by_id[run.id], task_id=run.id, queue=queue,
                        producer=producer, ignore_result=False,
                        headers={HEADER_ENQUEUED_AT: run.enqueued_at.isoformat(),
                                 HEADER_IDEMPOTENCY_KEY: None},
                    )  # fmt: skip

        client.runs.enqueue(batch, publish)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.raw_app import TASK_NAME, make_app
    from conveyor.app import create_app
    from conveyor.client import Client
    from conveyor.models.migrate import upgrade

    n, chunk = args.count, args.chunk
    machine = h.machine_info()
    with h.scratch_database("bulk") as db, h.scratch_redis(args.redis_db) as (broker,):
        conv_db = h.pg_url(db, "postgresql+psycopg")
        upgrade(conv_db)
        prefix = h.unique("bulk") + "."
        client = Client(create_app(h.conveyor_settings(broker, conv_db, prefix, "prefork", 2)))
        queue = client.app.agent_queue(client.app.agents.get(AGENT))
        raw_backend = broker if args.raw_backend == "redis" else ""
        raw = make_app(broker, raw_backend, config=h.raw_config(args, broker), queue="raw_bulk")
        task = raw.tasks[TASK_NAME]
        rdb = redis.Redis.from_url(broker)

        def raw_loop() -> None:
            for i in range(n):
                raw.send_task(TASK_NAME, kwargs={"i": i})

        def conveyor(keyed: bool) -> Callable[[], None]:
            def submit() -> None:
                keys = [f"k{i}" for i in range(n)] if keyed else None
                client.submit_many(
                    AGENT, ({"i": i} for i in range(n)), idempotency_keys=keys, chunk_size=chunk
                )

            return submit

        sides: dict[str, Callable[[], None]] = {BASELINE: raw_loop, "conveyor": conveyor(False)}
        if args.keyed:
            sides["keyed"] = conveyor(True)
        if args.previous:
            sides["previous"] = lambda: previous_submit_many(
                client, AGENT, [{"i": i} for i in range(n)], chunk
            )
        assert task.name == TASK_NAME
        # one untimed small round: connections, pools, the app's first publish
        raw.send_task(TASK_NAME, kwargs={"i": -1})
        client.submit_many(AGENT, [{"i": -1}] * 10)
        trials: list[dict[str, float]] = []
        names = list(sides)
        for trial in range(args.trials):
            rotation = trial % len(names)
            rates: dict[str, float] = {}
            for name in names[rotation:] + names[:rotation]:
                rdb.flushdb()
                with psycopg.connect(h.pg_url(db), autocommit=True) as conn:
                    conn.execute("TRUNCATE agent_runs")
                started = time.perf_counter()
                sides[name]()
                rates[name] = n / (time.perf_counter() - started)
                if name != BASELINE:
                    check(rdb, queue, h.pg_url(db), n)
            trials.append(rates)
        client.close()
        raw.close()
    ratios = [{name: t[name] / t[BASELINE] for name in t if name != BASELINE} for t in trials]
    summary = {
        name: {
            "runs_per_s_median": statistics.median(t[name] for t in trials),
            "ratio_median": statistics.median(r[name] for r in ratios)
            if name in ratios[0]
            else 1.0,
            "ratio_min": min(r[name] for r in ratios) if name in ratios[0] else 1.0,
            "ratio_max": max(r[name] for r in ratios) if name in ratios[0] else 1.0,
        }
        for name in trials[0]
    }
    return {
        "benchmark": "bulk_submit",
        "machine": machine,
        "config": {
            "count": n,
            "chunk": chunk,
            "trials": args.trials,
            "redis_db": args.redis_db,
            "raw_delivery": "celery defaults" if args.raw_celery_defaults else "conveyor's",
            "raw_backend": args.raw_backend,
            "agent": AGENT,
        },
        "trials": [
            {"runs_per_s": t, "ratio_to_raw": r} for t, r in zip(trials, ratios, strict=True)
        ],
        "summary": summary,
        "target": f"conveyor / raw >= {TARGET}",
        "target_met": summary["conveyor"]["ratio_median"] >= TARGET,
    }


def check(rdb: redis.Redis, queue: str, database: str, n: int) -> None:
    """Every run of the trial is in the broker and recorded."""
    waiting = rdb.llen(queue)
    with psycopg.connect(database) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM agent_runs").fetchone() or (0,)
    if waiting != n or rows != n:
        raise RuntimeError(f"expected {n} messages and rows, found {waiting} and {rows}")


def report(result: dict[str, Any]) -> None:
    cfg, machine = result["config"], result["machine"]
    names = list(result["summary"])
    rows = [
        [f"trial {i + 1}", *(t["runs_per_s"][name] for name in names),
         *(t["ratio_to_raw"][name] for name in names if name != BASELINE)]
        for i, t in enumerate(result["trials"])
    ]  # fmt: skip
    ratio_columns = [f"{name}/raw" for name in names if name != BASELINE]
    h.print_table(
        f"Bulk submit of {cfg['count']} runs, runs/s (chunks of {cfg['chunk']}; load "
        f"{machine['loadavg_at_start']}, {machine['date']})",
        ["", *names, *ratio_columns],
        rows,
    )
    conveyor = result["summary"]["conveyor"]
    print(
        f"verdict: submit_many / send_task loop = {conveyor['ratio_median']:.2f} median "
        f"({conveyor['ratio_min']:.2f}-{conveyor['ratio_max']:.2f}) [raw: {cfg['raw_delivery']} "
        f"delivery settings, result store {cfg['raw_backend']}] (target >= {TARGET}: "
        f"{'MET' if result['target_met'] else 'MISSED'})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("-n", "--count", type=int, default=20_000, help="runs per side per trial")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=1000, help="submit_many's chunk_size")
    parser.add_argument("--redis-db", type=int, default=15, help="the broker's db (flushed!)")
    parser.add_argument(
        "--raw-backend",
        choices=["none", "redis"],
        default="none",
        help="the raw app's result store: none (the faster baseline), or Redis (plain "
        "Celery then subscribes to each task's result channel as it sends it)",
    )
    parser.add_argument("--keyed", action="store_true", help="also time keyed runs")
    parser.add_argument("--previous", action="store_true", help="also time the pre-19 loop")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--raw-celery-defaults",
        action="store_true",
        help="give raw Celery Celery's defaults instead of conveyor's delivery settings",
    )
    return h.run_main(parser, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
