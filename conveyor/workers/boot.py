"""Worker boot: wait for the database, refuse an unmigrated one, start Celery on one pool."""

from __future__ import annotations

import logging
import time

from conveyor.broker.migrate import check_worker_queues
from conveyor.broker.transport import consume_in_batches
from conveyor.celery_app import ConveyorApp
from conveyor.errors import ServiceUnavailable
from conveyor.models.migrate import check_migrated
from conveyor.results import write_results_in_groups
from conveyor.workers.aio_pool import ALIAS as ASYNC_POOL
from conveyor.workers.pipeline import settle

log = logging.getLogger(__name__)


def wait_for_database(url: str, *, max_wait: float | None = None) -> None:
    """Check the schema, retrying with backoff while the database is unreachable."""
    delay, deadline = 0.5, None if max_wait is None else time.monotonic() + max_wait
    while True:
        try:
            check_migrated(url)
            return
        except ServiceUnavailable as exc:
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            log.warning("%s; retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def worker_argv(
    app: ConveyorApp,
    pool_name: str,
    *,
    node_name: str | None = None,
    loglevel: str = "INFO",
    concurrency: int | None = None,
) -> list[str]:
    """The `celery worker` arguments that make a worker of exactly one pool."""
    pool = app.settings.pool(pool_name)
    argv = [
        "worker",
        "--queues",
        ",".join(pool.queues(app.settings.queue_prefix)),
        "--concurrency",
        str(concurrency or pool.concurrency),
        "--prefetch-multiplier",
        str(pool.prefetch_multiplier),
        "--hostname",
        node_name or f"{pool.name}@%h",
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        loglevel,
    ]
    if pool.kind != "asyncio":
        argv += ["--pool", pool.kind]
    if pool.max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(pool.max_tasks_per_child)]
    if pool.max_memory_per_child_kb:
        argv += ["--max-memory-per-child", str(pool.max_memory_per_child_kb)]
    return argv


def run_worker(app: ConveyorApp, pool_name: str, **options: str | int | None) -> None:
    """Run a worker of one pool in the foreground until a warm shutdown (SIGTERM)."""
    assert app.settings.database_url is not None
    wait_for_database(app.settings.database_url)
    check_worker_queues(app, pool_name)
    app.pool_name = pool_name
    if app.settings.pool(pool_name).kind == "asyncio":
        app.conf.worker_pool = ASYNC_POOL
        app.recorder.write_in_groups(settle)
        write_results_in_groups(settle)
        consume_in_batches()
    app.worker_main(worker_argv(app, pool_name, **options))  # type: ignore[arg-type]
