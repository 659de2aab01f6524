"""Taskiq's side (runs in the peers' venv): a taskiq-redis broker, the `wait` task and a
command line.

    python -m benchmarks.peers.taskiq_side fill N SECONDS   # N wait(SECONDS, i), no worker
    python -m taskiq worker benchmarks.peers.taskiq_side:broker --workers 1 \\
        --max-async-tasks N                                   # one worker process
    python -m benchmarks.peers.taskiq_side check N          # JSON: succeeded / failed

PEER_REDIS_URL is the Redis db: taskiq-redis's ListQueueBroker (the list `taskiq`) with its
RedisAsyncResultBackend (one key per task, `result:<task id>`). A task is done when its
result is stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import sys
from typing import Any

from redis.asyncio import Redis
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "taskiq"
RESULT_PREFIX = "result"
BATCH = 500

broker = ListQueueBroker(URL, queue_name=QUEUE).with_result_backend(
    RedisAsyncResultBackend(URL, prefix_str=RESULT_PREFIX)
)


@broker.task(task_name="wait")
async def wait(seconds: float, i: int) -> dict[str, Any]:
    """The capacity workload: await `seconds`, as an agent waiting on an LLM would."""
    await asyncio.sleep(seconds)
    return {"i": i}


async def fill(n: int, seconds: float) -> None:
    await broker.startup()
    for start in range(0, n, BATCH):
        await asyncio.gather(*(wait.kiq(seconds, i) for i in range(start, min(n, start + BATCH))))
    await broker.shutdown()


async def check() -> dict[str, int]:
    redis = Redis.from_url(URL)
    out = {"succeeded": 0, "failed": 0}
    async for key in redis.scan_iter(match=f"{RESULT_PREFIX}:*", count=1000):
        result = pickle.loads(await redis.get(key))  # our own results
        out["failed" if result["is_err"] else "succeeded"] += 1
    await redis.aclose()
    return out


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "fill":
        asyncio.run(fill(int(argv[1]), float(argv[2])))
    elif command == "check":
        print(json.dumps(asyncio.run(check())))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
