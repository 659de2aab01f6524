"""Celery's Redis result backend, without a SUBSCRIBE for every submit.

conveyor's Client waits for runs on PostgreSQL (LISTEN/NOTIFY), so subscribing to each
task's result channel at submit time is wasted work (and thousands of subscriptions for a
bulk submit). `AsyncResult.get()` still subscribes when it is called, and first reads any
result already stored, so plain-Celery reads keep working.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend

OVERRIDES = {alias: f"{__name__}:RedisResults" for alias in ("redis", "rediss")}


class RedisResults(RedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Do not subscribe at submit time; `get()` subscribes on demand."""
