"""Round-trip latency: conveyor submit + wait versus raw Celery delay() + get().

Each side's worker is a subprocess with the same pool kind and concurrency (default prefork
c=2, the shipped default pool). conveyor's worker has Redis db --redis-db as broker; the raw
workers share db --redis-db + 1, each on its own queue. The workers run side by side and the
round trips are interleaved in blocks, rotating the order, so machine noise hits every side
alike. Round trips are sequential.

Sides:
  conveyor         Client.submit("conveyor.ping", {...}) then client.wait(id): an idempotent
                   agent (no claim: its run is written once, at its final state)
  conveyor_default the same with "bench.ping" (benchmarks/agents.py): conveyor.ping's body as
                   a default agent, so the worker claims the run in PostgreSQL first (one
                   round trip and the `started` row), as every agent declared without
                   idempotent=True does; same worker as `conveyor`
  raw_redis        plain Celery, Redis result backend: ping.delay(...).get()
  raw_pg           plain Celery, its own PostgreSQL result backend (db+postgresql+psycopg://),
                   .get(interval=--pg-interval): Celery's database backend is polled
The raw sides get conveyor's delivery settings (acks_late, reject_on_worker_lost, prefetch
1, JSON, conveyor's broker transport options) unless --raw-celery-defaults.
Target: conveyor p50 / raw_redis p50 <= 1.5, judged for both conveyor sides.

Run from the repository root:  .venv/bin/python -m benchmarks.roundtrip [-n 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness as h

TARGET = 1.5


CONVEYOR_SIDES = {"conveyor": "conveyor.ping", "conveyor_default": "bench.ping"}


class ConveyorSide:
    """Submit one run and wait for its row (LISTEN/NOTIFY); `agent` defaults to the side's."""

    def __init__(self, name: str, client: Any, agent: str | None = None) -> None:
        self.name, self.client = name, client
        self.agent = agent or CONVEYOR_SIDES[name]

    def submit(self, i: int) -> Any:
        return self.client.submit(self.agent, {"i": i})

    def wait(self, handle: Any, timeout: float) -> None:
        from conveyor.errors import RunTimeout

        try:
            run = self.client.wait(handle, timeout=timeout)
        except RunTimeout as exc:
            raise TimeoutError(str(exc)) from None
        if run.status.value != "succeeded" or run.output.get("echo", run.output).get("i") is None:
            raise RuntimeError(f"run {handle} ended {run.status.value}: {run.error_message}")

    def close(self) -> None:
        pass  # the client is shared by both conveyor sides and closed by run()


class RawSide:
    def __init__(
        self, name: str, broker: str, backend: str, config: dict[str, Any], interval: float = 0.5
    ) -> None:
        from benchmarks.raw_app import TASK_NAME, make_app

        self.name, self.interval = name, interval
        self.app = make_app(broker, backend, config=config, queue=name)
        self.task = self.app.tasks[TASK_NAME]
        if backend.startswith("db+"):
            self.app.backend.ResultSession().close()  # type: ignore[attr-defined]  # makes tables

    def submit(self, i: int) -> Any:
        return self.task.delay(i=i)

    def wait(self, handle: Any, timeout: float) -> None:
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            result = handle.get(timeout=timeout, interval=self.interval)
        except CeleryTimeout as exc:
            raise TimeoutError(str(exc)) from None
        if result.get("i") is None:
            raise RuntimeError(f"unexpected result {result!r}")

    def close(self) -> None:
        self.app.close()


def wait_ready(side: Any, worker: h.Worker, timeout: float = 120.0) -> float:
    """Send a first round trip and wait for it while the worker starts; returns seconds."""
    handle, deadline = side.submit(-1), time.monotonic() + timeout
    while True:
        worker.check_alive()
        try:
            side.wait(handle, timeout=1.0)
            return time.monotonic() - worker.started_at
        except TimeoutError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{side.name}: no answer after {timeout:g}s\n{worker.log_tail()}"
                ) from None


def measure(
    sides: list[Any], workers: list[h.Worker], n: int, warmup: int, block: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {s.name: [] for s in sides}
    for side in sides:
        for i in range(warmup):
            side.wait(side.submit(i), timeout=30.0)
    done, rotation = 0, 0
    while done < n:
        size = min(block, n - done)
        order = sides[rotation % len(sides) :] + sides[: rotation % len(sides)]
        for side in order:
            for i in range(done, done + size):
                t0 = time.perf_counter()
                side.wait(side.submit(i), timeout=30.0)
                samples[side.name].append((time.perf_counter() - t0) * 1000.0)
        for worker in workers:
            worker.check_alive()
        done, rotation = done + size, rotation + 1
    return samples


def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.app import create_app
    from conveyor.client import Client
    from conveyor.models.migrate import upgrade

    machine = h.machine_info()
    with (
        h.scratch_database("rt") as db,
        h.scratch_redis(args.redis_db, args.redis_db + 1) as (conv_broker, raw_broker),
        h.Workers(args.keep_logs) as workers,
    ):
        conv_db = h.pg_url(db, "postgresql+psycopg")
        raw_pg = h.pg_url(db, "db+postgresql+psycopg")
        upgrade(conv_db)
        prefix = h.unique("rt") + "."
        c = args.concurrency
        config = h.raw_config(args, raw_broker)
        settings = h.conveyor_settings(conv_broker, conv_db, prefix, args.pool, c)
        client = Client(create_app(settings))
        sides: list[Any] = [
            ConveyorSide("conveyor", client),
            ConveyorSide("conveyor_default", client),
            RawSide("raw_redis", raw_broker, raw_broker, config),
        ]
        conv_worker = workers.start(
            "conveyor",
            h.conveyor_worker_argv(c, args.loglevel),
            h.conveyor_env(conv_broker, conv_db, prefix, args.pool, c),
        )
        started = [
            conv_worker,
            conv_worker,
            workers.start(
                "raw_redis",
                h.raw_worker_argv(args.pool, c, args.loglevel, "rawredis"),
                h.raw_env(raw_broker, raw_broker, config=config, queue="raw_redis"),
            ),
        ]
        if not args.no_pg:
            sides.append(RawSide("raw_pg", raw_broker, raw_pg, config, interval=args.pg_interval))
            started.append(
                workers.start(
                    "raw_pg",
                    h.raw_worker_argv(args.pool, c, args.loglevel, "rawpg"),
                    h.raw_env(raw_broker, raw_pg, config=config, queue="raw_pg"),
                )
            )
        try:
            ready = {
                s.name: round(wait_ready(s, w), 2) for s, w in zip(sides, started, strict=True)
            }
            samples = measure(sides, started, args.count, args.warmup, args.block)
        finally:
            for side in sides:
                side.close()
            client.close()
    stats = {name: h.percentiles(values) for name, values in samples.items()}
    ratios = {name: stats[name]["p50"] / stats["raw_redis"]["p50"] for name in CONVEYOR_SIDES}
    terms = f"{args.pool} c={c} on both sides, {h.raw_terms(args)}, N={args.count} sequential"
    return {
        "benchmark": "roundtrip",
        "machine": machine,
        "config": {
            "count": args.count,
            "warmup": args.warmup,
            "block": args.block,
            "pool": args.pool,
            "concurrency": c,
            "loglevel": args.loglevel,
            "raw_delivery": "celery defaults" if args.raw_celery_defaults else "conveyor's",
            "pg_interval_s": args.pg_interval,
        },
        "terms": terms,
        "agents": CONVEYOR_SIDES,
        "ready_after_s": ready,
        "latency_ms": stats,
        "ratio_p50": ratios["conveyor"],
        "ratios_p50": ratios,
        "target": f"conveyor p50 / raw_redis p50 <= {TARGET}",
        "target_met": {name: r <= TARGET for name, r in ratios.items()},
    }


def report(result: dict[str, Any]) -> None:
    stats = result["latency_ms"]
    cfg = result["config"]
    rows = [
        [name, s["n"], s["p50"], s["p90"], s["p99"], s["mean"], s["max"]]
        for name, s in stats.items()
    ]
    h.print_table(
        f"Round trip, ms ({cfg['pool']} c={cfg['concurrency']}, load "
        f"{result['machine']['loadavg_at_start']}, {result['machine']['date']})",
        ["side", "n", "p50", "p90", "p99", "mean", "max"],
        rows,
    )
    base = stats["raw_redis"]["p50"]
    for name, s in stats.items():
        print(f"  {name:<16} p50 / raw_redis p50 = {s['p50'] / base:.2f}")
    for name, agent in result["agents"].items():
        kind = "idempotent, no claim" if name == "conveyor" else "default agent, claimed"
        print(
            f"verdict: {agent} ({kind}) p50 / raw_redis p50 = {result['ratios_p50'][name]:.2f} "
            f"[{result['terms']}] (target <= {TARGET}: "
            f"{'MET' if result['target_met'][name] else 'MISSED'})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("-n", "--count", type=int, default=300, help="round trips per side")
    parser.add_argument("--warmup", type=int, default=30, help="untimed round trips per side")
    parser.add_argument("--block", type=int, default=25, help="interleaving block size")
    parser.add_argument("--pool", choices=["prefork", "threads", "solo"], default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--redis-db",
        type=int,
        default=11,
        help="conveyor's broker db; +1 is the raw sides' broker (both flushed!)",
    )
    parser.add_argument("--no-pg", action="store_true", help="skip the raw Celery + PG column")
    parser.add_argument(
        "--pg-interval",
        type=float,
        default=0.005,
        help="raw_pg: seconds between result polls in get()",
    )
    h.add_common_args(parser)
    return h.run_main(parser, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
