"""The raw Celery baseline: a plain Celery app with one trivial task, JSON only.

The worker side is started as `python -m celery -A benchmarks.raw_app worker ...` (cwd: the
repository root) and reads its broker and result backend from the environment:

    RAW_BROKER_URL       e.g. redis://127.0.0.1:6379/12
    RAW_RESULT_BACKEND   e.g. redis://127.0.0.1:6379/12 or db+postgresql+psycopg://...;
                         empty: no result store at all (results ignored)
    RAW_RELIABLE=1       optional: acks_late + prefetch multiplier 1, as conveyor configures
    RAW_CONFIG           optional: a JSON object of Celery settings applied last; the
                         benchmarks pass conveyor's delivery settings this way (acks_late,
                         reject_on_worker_lost, prefetch multiplier 1 and conveyor's own
                         broker_transport_options), see _harness.conveyor_delivery()
    RAW_QUEUE            optional: the default queue (and a prefix for the control and event
                         exchanges), so raw sides can share a Redis db without crosstalk

The benchmark process builds its own client apps with `make_app()`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery

TASK_NAME = "raw.ping"


def ping(**kwargs: Any) -> dict[str, Any]:
    """The trivial task: return its keyword arguments."""
    return kwargs


def make_app(
    broker: str,
    backend: str,
    *,
    reliable: bool = False,
    config: dict[str, Any] | None = None,
    queue: str = "",
) -> Celery:
    """A Celery app with plain defaults except JSON everywhere (no pickle). An empty
    `backend` means no result store: results are ignored, as with `ignore_result`."""
    app = Celery("raw", broker=broker, backend=backend or None, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    if not backend:
        app.conf.update(task_ignore_result=True)
    if reliable:
        app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1)
    if queue:
        app.conf.update(
            task_default_queue=queue,
            control_exchange=f"{queue}.celery",
            event_exchange=f"{queue}.celeryev",
        )
    if config:
        app.conf.update(config)

    app.task(name=TASK_NAME, shared=False)(ping)
    return app


app = make_app(
    os.environ.get("RAW_BROKER_URL", "redis://127.0.0.1:6379/12"),
    os.environ.get("RAW_RESULT_BACKEND", "redis://127.0.0.1:6379/12"),
    reliable=os.environ.get("RAW_RELIABLE", "") not in ("", "0"),
    config=json.loads(os.environ.get("RAW_CONFIG") or "{}"),
    queue=os.environ.get("RAW_QUEUE", ""),
)
