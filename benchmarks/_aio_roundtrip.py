"""Round trips on the asyncio pool for benchmarks/concurrency.py, with benchmarks/roundtrip.py's
method (its RawSide, wait_ready and measure: sequential round trips, interleaved in blocks,
the order rotating). Sides:
  conveyor.ping  Client.submit + wait; the default pool made kind asyncio, so the sync ping
                 runs in the pool's thread executor (one `--pool default` worker)
  bench.noop     an async agent on the io pool (a `--pool io` worker): the pool's own path
  raw_redis      the baseline: raw Celery, Redis result backend, delay() + get(), one worker
                 of --rt-raw-pool (default solo)
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks import _harness as h
from benchmarks._aio import NOOP, Conveyor
from benchmarks.roundtrip import ConveyorSide, RawSide, measure, wait_ready

PING = "conveyor.ping"


def agent_side(agent: str, client: Any) -> ConveyorSide:
    """A side that submits one run of `agent` and waits for its row."""
    return ConveyorSide(agent, client, agent)


def roundtrip(
    args: argparse.Namespace, workers: h.Workers, conveyor: Conveyor, raw_broker: str
) -> dict[str, Any]:
    from conveyor.client import Client

    conveyor.reset()
    h.flush_redis(raw_broker)
    c = args.noop_concurrency
    raw_pool, _, raw_c = args.rt_raw_pool.partition(":")
    config = h.raw_config(args, raw_broker)
    client = Client(conveyor.app)
    sides: list[Any] = [
        agent_side(PING, client),
        agent_side(NOOP, client),
        RawSide("raw_redis", raw_broker, raw_broker, config),
    ]
    try:
        started = [
            conveyor.start(workers, "rt-default", c, pool="default"),
            conveyor.start(workers, "rt-io", c, pool="io"),
            workers.start(
                "rt-raw",
                h.raw_worker_argv(raw_pool, int(raw_c or 1), args.loglevel, "rawredis"),
                h.raw_env(raw_broker, raw_broker, config=config, queue="raw_redis"),
            ),
        ]
        ready = {s.name: round(wait_ready(s, w), 2) for s, w in zip(sides, started, strict=True)}
        samples = measure(sides, started, args.rt_n, args.rt_warmup, 25)
    finally:
        for worker in workers.running[:]:
            if worker.label.startswith("rt-"):
                workers.stop(worker)
        for side in sides:
            side.close()
        client.close()
    stats = {name: h.percentiles(values) for name, values in samples.items()}
    base = stats["raw_redis"]
    return {
        "n": args.rt_n,
        "terms": f"conveyor asyncio c={c}, raw Celery {args.rt_raw_pool} with a Redis result "
        f"backend, {h.raw_terms(args)}, N={args.rt_n} sequential",
        "ready_after_s": ready,
        "latency_ms": stats,
        "ratios": {
            name: {"p50": stats[name]["p50"] / base["p50"], "p90": stats[name]["p90"] / base["p90"]}
            for name in (PING, NOOP)
        },
    }
