"""`conveyor health` against real services, run as a container's health check runs it."""

from __future__ import annotations

import json
from pathlib import Path

from conveyor import ConveyorApp
from conveyor.metrics import Exporter, serve
from tests.support.cli import conveyor
from tests.support.services import scratch_database
from tests.support.workers import WorkerProcess


def test_a_running_worker_is_healthy_and_a_stopped_one_is_not(
    redis_app: ConveyorApp, redis_env: dict[str, str], log_dir: Path
) -> None:
    worker = WorkerProcess(redis_app, redis_env, "analytics", log_dir).wait_ready()
    try:
        done = conveyor(
            redis_env, "health", "worker", "--pool", "analytics", "--node", worker.node, "--json"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        assert result["healthy"] is True and result["target"] == worker.node
        assert result["detail"].startswith("pong in ")
        plain = conveyor(redis_env, "health", "worker", "--node", worker.node)
        assert plain.returncode == 0
        assert plain.stdout.startswith(f"worker {worker.node}: healthy: pong in ")
        assert len(plain.stdout.splitlines()) == 1
    finally:
        assert worker.stop() == 0, worker.output()
    gone = conveyor(redis_env, "health", "worker", "--node", worker.node, "--timeout", "2")
    assert gone.returncode == 1
    assert gone.stdout == ""
    assert gone.stderr == f"worker {worker.node}: unhealthy: no reply to a ping within 2s\n"


def test_another_node_of_the_pool_does_not_answer_for_this_one(
    redis_app: ConveyorApp, redis_env: dict[str, str], log_dir: Path
) -> None:
    """The probe is for this container's worker: a live worker elsewhere is no answer."""
    worker = WorkerProcess(redis_app, redis_env, "analytics", log_dir).wait_ready()
    try:
        other = worker.node.replace("@test", "@elsewhere")
        done = conveyor(redis_env, "health", "worker", "--node", other, "--timeout", "1")
        assert done.returncode == 1
        assert "no reply" in done.stderr
    finally:
        worker.stop()


def test_broker_probe(redis_env: dict[str, str]) -> None:
    done = conveyor(redis_env, "health", "broker")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("broker: healthy: connected to ")
    down = conveyor(
        {**redis_env, "CONVEYOR_BROKER_URL": "redis://127.0.0.1:1/0"},
        "health",
        "broker",
        "--timeout",
        "2",
        "--json",
    )
    assert down.returncode == 1
    result = json.loads(down.stdout)
    assert result["healthy"] is False and "broker unreachable" in result["detail"]


def test_database_probe_needs_a_reachable_and_migrated_database(
    redis_env: dict[str, str], pg_admin: str
) -> None:
    done = conveyor(redis_env, "health", "database")
    assert done.returncode == 0, done.stderr
    assert "reachable, schema at " in done.stdout
    assert redis_env["CONVEYOR_DATABASE_URL"].rsplit("/", 1)[1] in done.stdout  # which one
    with scratch_database(pg_admin, "conveyor_health") as empty:
        unmigrated = conveyor({**redis_env, "CONVEYOR_DATABASE_URL": empty}, "health", "database")
    assert unmigrated.returncode == 1
    assert "run `conveyor db upgrade`" in unmigrated.stderr
    refused = conveyor(
        {**redis_env, "CONVEYOR_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"},
        "health",
        "database",
        "--timeout",
        "2",
    )
    assert refused.returncode == 1
    assert "database unreachable" in refused.stderr


def test_exporter_probe_follows_the_exporter(
    redis_app: ConveyorApp, redis_env: dict[str, str]
) -> None:
    with serve(Exporter(redis_app, ttl=0), "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.server_port}/healthz"
        done = conveyor(redis_env, "health", "exporter", "--url", url)
        assert done.returncode == 0, done.stderr
        assert "healthy: HTTP 200: broker ok" in done.stdout
    stopped = conveyor(redis_env, "health", "exporter", "--url", url, "--timeout", "2")
    assert stopped.returncode == 1
    assert "unhealthy: no answer" in stopped.stderr
