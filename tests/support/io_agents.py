"""Agents of an `io` pool of kind asyncio (tests/integration/test_asyncio_pool.py loads them)."""

from __future__ import annotations

import asyncio
import functools
import os
import time

import redis
from sqlalchemy import Connection, text

from conveyor import TransientError, agent, current_run, effect_once

POOL = "io"
LEDGER = "CREATE TABLE IF NOT EXISTS io_ledger (id bigserial PRIMARY KEY, run_id text NOT NULL)"
"""The effects of tests.io_hold: no unique key, so an effect that happened twice is two rows."""
_PEAK = """local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now"""


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["TEST_REDIS_URL"])


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


def _ledger_row(conn: Connection) -> int:
    run_id = current_run().id
    insert = text("INSERT INTO io_ledger (run_id) VALUES (:run_id) RETURNING id")
    return int(conn.execute(insert, {"run_id": run_id}).scalar_one())


@agent(name="tests.io_hold", pool=POOL)
async def io_hold(key: str, seconds: float = 120.0) -> str:
    """Counts its starts (hash `key`:starts, per run), writes its effect once (an io_ledger
    row, through effect_once), then, while `key`:hold exists, waits `seconds` (counted in
    `key`:holding); a cancelled wait is counted in `key`:cancelled before it goes on."""
    run_id = current_run().id
    _redis().hincrby(f"{key}:starts", run_id, 1)
    await asyncio.to_thread(effect_once, _ledger_row)
    if _redis().exists(f"{key}:hold"):
        _redis().hincrby(f"{key}:holding", run_id, 1)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            _redis().hincrby(f"{key}:cancelled", run_id, 1)
            raise
    return run_id


@agent(name="tests.io_block", pool=POOL)
async def io_block(seconds: float) -> float:
    """Blocks the event loop (time.sleep in async code): a stall of every run on it."""
    time.sleep(seconds)
    return seconds


@agent(name="tests.io_sync_sleep", pool=POOL)
def io_sync_sleep(key: str, seconds: float) -> int:
    """A sync agent that sleeps; `key`:peak keeps the most of them running at once."""
    now = int(_redis().eval(_PEAK, 2, f"{key}:now", f"{key}:peak"))
    try:
        time.sleep(seconds)
    finally:
        _redis().decr(f"{key}:now")
    return now
