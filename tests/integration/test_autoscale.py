"""`conveyor autoscale`: a backlog spike scales a pool out, it drains, and it scales back in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from typing import Any

import redis

from conveyor import Client, RunStatus
from tests.integration.conftest import make_app, service_env
from tests.support.waiting import wait_until
from tests.support.workers import ROOT

RUNS = 24
POOLS = {"default": {"concurrency": 1, "kind": "threads", "min_replicas": 1, "max_replicas": 3}}


def test_a_backlog_spike_scales_out_drains_and_scales_in_without_loss(
    redis_url: str, database_url: str
) -> None:
    env = {
        **service_env(redis_url, database_url, f"s{uuid.uuid4().hex[:8]}."),
        "CONVEYOR_POOLS": json.dumps(POOLS),
    }
    app = make_app(env)
    scaler = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "autoscale", "--pool", "default", "--interval", "0.5",
         "--scale-down-window", "3", "--loglevel", "INFO", "--json"],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    events: list[dict[str, Any]] = []
    output: list[str] = []

    def read() -> None:
        assert scaler.stdout is not None
        for line in scaler.stdout:
            output.append(line)
            if line.startswith("{"):
                events.append(json.loads(line))

    threading.Thread(target=read, daemon=True).start()

    def replicas() -> int:
        scaled = [e for e in events if e["action"] in ("scale-out", "scale-in")]
        return scaled[-1]["replicas"] if scaled else 0

    try:
        wait_until(lambda: replicas() == 1, 60, f"the first worker: {output}")
        key = f"autoscale-{uuid.uuid4().hex}"
        with Client(app) as client:
            ids = [
                client.submit("tests.slow_effect", {"key": f"{key}-{i}", "seconds": 0.4})
                for i in range(RUNS)
            ]
            wait_until(lambda: replicas() == 3, 60, f"scale-out to 3: {events}")
            runs = client.wait_many(ids, timeout=180)
        assert all(runs[i].status is RunStatus.SUCCEEDED for i in ids)
        counts = redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).mget(
            [f"{key}-{i}" for i in range(RUNS)]
        )
        assert counts == [b"1"] * RUNS, "every side effect happened exactly once"
        assert len({runs[i].worker for i in ids}) >= 2, "the extra workers took part"
        wait_until(lambda: replicas() == 1, 60, f"scale-in to 1: {events}")
        wait_until(
            lambda: sum(e["action"] == "exited" for e in events) >= 2, 60, "two drained workers"
        )
        assert all(e["exit_code"] == 0 for e in events if e["action"] == "exited"), events
    finally:
        os.killpg(scaler.pid, signal.SIGTERM)
        scaler.wait(60)
    assert scaler.returncode == 0, "".join(output)
