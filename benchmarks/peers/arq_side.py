"""arq's side (runs in the peers' venv): the `wait` job, its worker settings and a command line.

    python -m benchmarks.peers.arq_side fill N SECONDS   # N jobs wait(SECONDS, i), no worker
    python -m benchmarks.peers.arq_side worker           # one worker, max_jobs PEER_MAX_JOBS
    python -m benchmarks.peers.arq_side check N          # JSON: succeeded / failed results

PEER_REDIS_URL is the Redis db (arq's default queue `arq:queue`, results kept an hour as
arq does by default). A job is done when the worker removed it from the queue's sorted set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.constants import default_queue_name, result_key_prefix
from arq.jobs import deserialize_result
from arq.worker import run_worker

QUEUE = default_queue_name
BATCH = 500


async def wait(ctx: dict[str, Any], seconds: float, i: int) -> dict[str, Any]:
    """The capacity workload: await `seconds`, as an agent waiting on an LLM would."""
    await asyncio.sleep(seconds)
    return {"i": i}


def _redis() -> RedisSettings:
    return RedisSettings.from_dsn(os.environ["PEER_REDIS_URL"])


class WorkerSettings:
    functions = [wait]
    redis_settings = _redis() if "PEER_REDIS_URL" in os.environ else None
    max_jobs = int(os.environ.get("PEER_MAX_JOBS", "10000"))
    job_timeout = 3600
    handle_signals = True


async def fill(n: int, seconds: float) -> None:
    pool = await create_pool(_redis())
    for start in range(0, n, BATCH):
        await asyncio.gather(
            *(pool.enqueue_job("wait", seconds, i) for i in range(start, min(n, start + BATCH)))
        )
    await pool.aclose()


async def check() -> dict[str, int]:
    pool = await create_pool(_redis())
    out = {"succeeded": 0, "failed": 0}
    async for key in pool.scan_iter(match=f"{result_key_prefix}*", count=1000):
        result = deserialize_result(await pool.get(key))
        out["succeeded" if result.success else "failed"] += 1
    await pool.aclose()
    return out


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "fill":
        asyncio.run(fill(int(argv[1]), float(argv[2])))
    elif command == "worker":
        level = os.environ.get("PEER_LOGLEVEL", "WARNING")
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        run_worker(WorkerSettings)  # type: ignore[arg-type]
    elif command == "check":
        print(json.dumps(asyncio.run(check())))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
