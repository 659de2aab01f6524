"""Agents of an `io` pool of kind asyncio (tests/integration/test_asyncio_pool.py loads them)."""

from __future__ import annotations

import asyncio
import os

from conveyor import TransientError, agent, current_run

POOL = "io"


@agent(name="tests.io_wait", pool=POOL, retries=2, retry_backoff=0)
async def io_wait(seconds: float, mode: str = "ok", key: str = "") -> dict[str, object]:
    """Waits, and says which run it was before and after the wait (contexts must not leak)."""
    before = current_run().id
    await asyncio.sleep(seconds)
    if mode == "transient" and current_run().attempt == 1:
        raise TransientError("first attempt fails")
    if mode == "fail":
        raise ValueError(f"failed on purpose: {key}")
    return {"before": before, "after": current_run().id, "attempt": current_run().attempt}


@agent(name="tests.io_sync", pool=POOL)
def io_sync(value: int) -> dict[str, int]:
    """A sync agent on the asyncio pool: it runs in the pool's thread executor."""
    return {"value": value, "pid": os.getpid()}
