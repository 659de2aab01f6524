"""One long-lived event loop per worker process, on which async agents run."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from conveyor.forksafe import ProcessLocal

T = TypeVar("T")


def _start_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="conveyor-asyncio", daemon=True).start()
    return loop


_loop = ProcessLocal(_start_loop)


def process_loop() -> asyncio.AbstractEventLoop:
    """The loop of this process, started on first use and again after a fork."""
    return _loop.get()


def run_coroutine(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run a coroutine on the process loop and block the calling thread until it ends."""
    caller = contextvars.copy_context()

    async def in_caller_context() -> T:
        for var, value in caller.items():
            var.set(value)
        return await coro

    future = asyncio.run_coroutine_threadsafe(in_caller_context(), process_loop())
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise
