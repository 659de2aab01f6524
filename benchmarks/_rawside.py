"""Raw Celery drains for benchmarks/concurrency.py: N tasks queued while no worker runs,
then one raw Celery worker drains them. No result store; conveyor's delivery settings
(late acks, prefetch 1, its transport options) unless --raw-celery-defaults; a task is done
once its message is acked (benchmarks/throughput.py's Tally)."""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks import _harness as h
from benchmarks import _procs as p
from benchmarks.throughput import Tally, fill_raw

SLEEP_APP = "benchmarks.raw_sleep_app"


def fill_sleep(n: int, broker: str, config: dict[str, Any], seconds: float) -> None:
    """Queue `n` raw.sleep(seconds) tasks on a raw app with no result store."""
    from benchmarks.raw_app import make_app
    from benchmarks.raw_sleep_app import register

    app = make_app(broker, "", config=config)
    task = register(app)
    with app.producer_or_acquire() as producer:
        for i in range(n):
            task.apply_async(kwargs={"seconds": seconds, "i": i}, producer=producer)
    app.close()


def drain(
    args: argparse.Namespace,
    workers: h.Workers,
    broker: str,
    *,
    pool: str,
    concurrency: int,
    n: int,
    sleep: float | None = None,
) -> dict[str, Any]:
    """Fill `broker` (flushed first) with `n` raw.ping tasks, or raw.sleep(`sleep`) ones,
    start one raw worker (`pool`, `concurrency`) and time its drain."""
    h.flush_redis(broker)
    config = h.raw_config(args, broker)
    label = f"raw {pool} c={concurrency}" + ("" if sleep is None else f" sleep {sleep:g}s")
    p.progress(f"{label}: queueing {n}")
    if sleep is None:
        fill_raw(n, broker, "", config)
    else:
        fill_sleep(n, broker, config, sleep)
    argv = h.raw_worker_argv(pool, concurrency, args.loglevel, f"raw{pool}")
    if sleep is not None:
        argv[argv.index("benchmarks.raw_app")] = SLEEP_APP
    tally = Tally("raw", None, "", broker, n)  # type: ignore[arg-type]  # no database here
    worker = workers.start(label.replace(" ", "-"), argv, h.raw_env(broker, "", config=config))
    try:
        cpu = p.tree_cpu_seconds if pool == "prefork" else p.cpu_seconds
        result = p.watch_drain(label, tally.count, worker, n, args.poll, args.timeout, cpu)
    finally:
        workers.stop(worker)
    span = tally.span()
    h.flush_redis(broker)
    return {
        "side": f"raw_{pool}",
        "pool": pool,
        "concurrency": concurrency,
        "sleep_s": sleep,
        **result,
        "span_s": span,
        "steady_per_s": (n - 1) / span if span > 0 else float("nan"),
    }
