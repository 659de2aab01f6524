"""The asyncio pool: one worker process keeps up to `concurrency` agent runs in flight on
one event loop, and stays a Celery worker (Flower, inspect, control and events see it so).

Celery hands a pool each message's trace, a synchronous call. This pool runs every trace in
a greenlet on the process's event loop (SQLAlchemy's `greenlet_spawn`): Celery's own code
(request context, result backend, acks late, events) runs as in any pool, and where the
agent's task reaches its pipeline it awaits `execute_async` instead (`await_only`), so a
waiting run holds no thread and no slot of another run. Sync agents run in the loop's
bounded thread executor; the steps' database round trips run inline in the trace (measured
cheaper than a thread hop each, see the README's architecture section).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from celery.concurrency.base import BasePool, apply_target
from sqlalchemy.util import greenlet_spawn

from conveyor.workers.asyncloop import process_loop

BLOCKING_THREADS = 64
"""Threads for the sync agents an asyncio pool runs."""
ALIAS = "conveyor.workers.aio_pool:AsyncIOPool"
"""What `--pool` is given for a pool of kind `asyncio`."""

_on_pool: contextvars.ContextVar[bool] = contextvars.ContextVar("conveyor_aio", default=False)


def on_async_pool() -> bool:
    """Whether this code runs in a trace of the asyncio pool (may `await_only`)."""
    return _on_pool.get()


class ApplyResult:
    def __init__(self, future: Future[Any]) -> None:
        self.future = future

    def get(self, timeout: float | None = None) -> Any:
        return self.future.result(timeout)

    def wait(self, timeout: float | None = None) -> None:
        wait([self.future], timeout)


class AsyncIOPool(BasePool):
    """Runs each task's trace in a greenlet on the process loop; `limit` is its slots."""

    signal_safe = False
    body_can_be_buffer = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight: set[Future[Any]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    def on_start(self) -> None:
        self.loop = process_loop()
        self.loop.call_soon_threadsafe(
            self.loop.set_default_executor,
            ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="conveyor-blocking"),
        )

    def on_apply(self, *args: Any, **kwargs: Any) -> ApplyResult:  # type: ignore[override]
        """Celery's `on_apply(target, args, kwargs, callback, ...)` (its pools return their
        ApplyResult, which celery-types types as None)."""
        assert self.loop is not None, "the pool is started before it is given work"
        future = asyncio.run_coroutine_threadsafe(_trace(*args, **kwargs), self.loop)
        self.in_flight.add(future)
        future.add_done_callback(self.in_flight.discard)
        return ApplyResult(future)

    def on_stop(self) -> None:
        """Warm shutdown: the consumer has stopped taking messages; let the runs end."""
        wait(list(self.in_flight))

    def on_terminate(self) -> None:
        for future in list(self.in_flight):
            future.cancel()

    def _get_info(self) -> dict[str, Any]:
        """What `celery inspect stats` and Flower show of the pool."""
        return {
            "implementation": f"{type(self).__module__}:{type(self).__name__}",
            "max-concurrency": self.limit,
            "in-flight": len(self.in_flight),
        }

    @property
    def num_processes(self) -> int:
        return int(self.limit or 0)


async def _trace(
    target: Callable[..., Any],
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    callback: Callable[..., Any] | None = None,
    accept_callback: Callable[..., Any] | None = None,
    **_: Any,
) -> Any:
    """One message's trace, in a greenlet of its own task (so its own context)."""
    _on_pool.set(True)
    return await greenlet_spawn(apply_target, target, args, kwargs, callback, accept_callback)
