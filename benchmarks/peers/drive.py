"""Drives the peers from the main venv: fill a peer's queue, start its one worker process,
time the drain with the same polls as conveyor's (_procs.watch_drain), check the results."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from typing import Any

import redis

from benchmarks import _harness as h
from benchmarks import _procs as p
from benchmarks.peers import venv

PEERS = ("arq", "taskiq")


def _argv(peer: str, python: str, n: int, loglevel: str) -> list[str]:
    if peer == "arq":
        return [python, "-m", "benchmarks.peers.arq_side", "worker"]
    return [
        python, "-m", "taskiq", "worker", "benchmarks.peers.taskiq_side:broker",
        "--workers", "1", "--max-async-tasks", str(n), "--log-level", loglevel,
    ]  # fmt: skip


def _counter(peer: str, broker: str, n: int) -> Any:
    """Runs done: arq removes a finished job from its queue's sorted set; Taskiq stores a
    result key per task (the db holds nothing else but the queue's list)."""
    db = redis.Redis.from_url(broker)
    if peer == "arq":
        from_queue = "arq:queue"
        return lambda: n - int(db.zcard(from_queue))
    return lambda: int(db.dbsize()) - int(db.exists("taskiq"))


def drain(
    args: argparse.Namespace, workers: h.Workers, broker: str, peer: str, n: int,
    seconds: float, concurrency: int,
) -> dict[str, Any]:  # fmt: skip
    """The capacity workload on `peer`: n waits of `seconds` queued in the flushed `broker`
    db, then one worker process (arq max_jobs, Taskiq --max-async-tasks: `concurrency`)."""
    python = venv.python(peer)
    module = f"benchmarks.peers.{peer}_side"
    env = {
        "PEER_REDIS_URL": broker,
        "PEER_MAX_JOBS": str(concurrency),
        "PEER_LOGLEVEL": args.loglevel.upper(),
    }
    h.flush_redis(broker)
    p.progress(f"{peer}: queueing {n}")
    run_env = {**os.environ, **env}
    subprocess.run(
        [python, "-m", module, "fill", str(n), str(seconds)], cwd=h.REPO, env=run_env,
        check=True, timeout=600,
    )  # fmt: skip
    worker = workers.start(peer, _argv(peer, python, concurrency, args.loglevel.upper()), env)
    try:
        result = p.watch_drain(
            peer, _counter(peer, broker, n), worker, n, args.poll, args.timeout,
            p.tree_cpu_seconds,
        )  # fmt: skip
    finally:
        workers.stop(worker)
    checked = subprocess.run(
        [python, "-m", module, "check", str(n)], cwd=h.REPO, env=run_env,
        check=True, timeout=600, capture_output=True, text=True,
    )  # fmt: skip
    counts = json.loads(checked.stdout)
    h.flush_redis(broker)
    return {
        "side": peer,
        "version": venv.version(peer),
        "seconds": seconds,
        "concurrency": concurrency,
        **result,
        **counts,
        "all_succeeded": counts["succeeded"] == n and counts["failed"] == 0,
    }
