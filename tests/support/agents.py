"""Agents the integration tests run on real workers (loaded through CONVEYOR_AGENT_MODULES)."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import redis
from celery import current_task
from pydantic import BaseModel

from conveyor import TransientError, agent, current_run


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["TEST_REDIS_URL"])


@agent(name="tests.add")
def add(a: int, b: int) -> int:
    return a + b


class Doubled(BaseModel):
    value: int


@agent(name="tests.double")
def double(value: int) -> Doubled:
    return Doubled(value=value * 2)


@agent(name="tests.sum_results")
def sum_results(results: list[int]) -> int:
    return sum(results)


@agent(name="tests.flaky", retries=3, retry_backoff=0)
def flaky(key: str, fail_times: int) -> int:
    """Fails with a transient error `fail_times` times, then returns the attempt number."""
    attempt = int(_redis().incr(key))
    if attempt <= fail_times:
        raise TransientError(f"transient failure {attempt}")
    return attempt


@agent(name="tests.finishing", retries=3, retry_backoff=0)
def finishing(key: str, fail_times: int) -> int:
    """As tests.flaky, and each attempt asks to note `<key>:finished` when the run is done."""
    current_run().on_finished.append(lambda: _redis().rpush(f"{key}:finished", "done"))
    return flaky(key, fail_times)  # type: ignore[no-any-return]


@agent(name="tests.boom", retries=3, retry_backoff=0)
def boom(message: str) -> None:
    raise ValueError(message)


@agent(name="tests.effect")
def effect(key: str) -> int:
    """A side effect that must happen once per run: counts its executions in Redis."""
    return int(_redis().incr(key))


@agent(name="tests.slow_effect")
def slow_effect(key: str, seconds: float) -> int:
    """A side effect after some work: counts its executions in Redis."""
    time.sleep(seconds)
    return int(_redis().incr(key))


@agent(name="tests.async_info")
async def async_info(delay: float = 0.0) -> dict[str, int]:
    await asyncio.sleep(delay)
    return {
        "loop": id(asyncio.get_running_loop()),
        "pid": os.getpid(),
        "thread": threading.get_ident(),
    }


@agent(name="tests.where", pool="memory")
def where() -> dict[str, str]:
    run = current_run()
    return {"pool": run.pool, "worker": run.worker}


@agent(name="tests.sleep")
def sleep(seconds: float, key: str = "") -> float:
    if key:
        _redis().set(key, "started")
    time.sleep(seconds)
    return seconds


@agent(name="tests.soft_limited", soft_time_limit=0.5, time_limit=5)
def soft_limited(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@agent(name="tests.stubborn", soft_time_limit=0.5, time_limit=1.5)
def stubborn(seconds: float) -> float:
    """Ignores the soft time limit, so only the hard limit (a killed child) stops it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except Exception:
            continue
    return seconds


@agent(name="tests.big", idempotent=True)
def big(size: int) -> str:
    """An output too large to travel inside a notification."""
    return "é" * size


@agent(name="tests.tick", idempotent=True, retries=0)
def tick() -> str | None:
    """Sent by `conveyor beat` in the leader test; its runs' enqueued_at are the ticks, and
    each returns its message's origin (`gen<pid>@<host>`): which beat process sent it."""
    return current_task.request.origin


@agent(name="tests.until_flag", retries=1, retry_backoff=0)
def until_flag(flag: str, counter: str) -> int:
    """Counts its executions; fails with a transient error until the Redis key `flag` is set."""
    client = _redis()
    executions = int(client.incr(counter))
    if not client.exists(flag):
        raise TransientError(f"flag {flag} not set (execution {executions})")
    return executions


@agent(name="tests.crash")
def crash(counter: str) -> None:
    """Counts its executions, then kills its own worker process (kill -9)."""
    _redis().incr(counter)
    os.kill(os.getpid(), 9)


@agent(name="tests.crash_idempotent", idempotent=True)
def crash_idempotent(counter: str) -> None:
    """As tests.crash, for an idempotent agent (which skips the claim on first delivery)."""
    _redis().incr(counter)
    os.kill(os.getpid(), 9)


class Echoed(BaseModel):
    tag: str
    pool: str
    executions: int


def _echo(tag: str) -> Echoed:
    """Counts this tag's executions in Redis: a plain client's message must run once."""
    executions = int(_redis().incr(f"echo:{tag}"))
    return Echoed(tag=tag, pool=current_run().pool, executions=executions)


echo_default = agent(name="tests.echo.default")(_echo)
echo_memory = agent(name="tests.echo.memory", pool="memory")(_echo)
echo_vector = agent(name="tests.echo.vector", pool="vector")(_echo)
echo_analytics = agent(name="tests.echo.analytics", pool="analytics")(_echo)
