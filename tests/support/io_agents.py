"""Agents of an `io` pool of kind asyncio (tests/integration/test_asyncio_pool.py loads them)."""

from __future__ import annotations

import asyncio
import os

import redis

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


@agent(name="tests.io_soft", pool=POOL, soft_time_limit=0.5, time_limit=5)
async def io_soft(seconds: float, key: str) -> float:
    """Cleans up when the soft limit cancels its wait: it notes `key` in Redis."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).set(key, "cleaned up")
        raise
    return seconds


@agent(name="tests.io_stubborn", pool=POOL, soft_time_limit=0.5, time_limit=1.5)
async def io_stubborn(seconds: float) -> float:
    """Ignores the soft limit's cancellation, so only the hard limit stops it."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue
    return seconds
