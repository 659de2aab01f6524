"""Time limits end runs as failed; priorities order the backlog; the worker waits for its DB."""

from __future__ import annotations

import uuid
from pathlib import Path

from conveyor import Client, RunStatus
from tests.integration.conftest import make_app, service_env
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess


def test_soft_time_limit_fails_the_run(client: Client) -> None:
    run = client.wait(client.submit("tests.soft_limited", {"seconds": 10}), timeout=30)
    assert run.status is RunStatus.FAILED
    assert run.error_type == "SoftTimeLimitExceeded"


def test_hard_time_limit_is_recorded_by_the_worker_parent(client: Client) -> None:
    run = client.wait(client.submit("tests.stubborn", {"seconds": 10}), timeout=30)
    assert run.status is RunStatus.FAILED
    assert run.error_type == "TimeLimitExceeded"
    assert client.result(client.submit("tests.add", {"a": 1, "b": 1}), timeout=30) == 2


def test_urgent_runs_leave_the_backlog_first(
    redis_url: str, database_url: str, log_dir: Path
) -> None:
    env = service_env(redis_url, database_url, f"p{uuid.uuid4().hex[:8]}.")
    app = make_app(env)
    with Client(app) as client:
        low = client.submit_many("tests.add", [{"a": i, "b": 0} for i in range(5)], priority=0)
        high = client.submit("tests.add", {"a": 100, "b": 0}, priority=9)
        worker = WorkerProcess(app, env, "default", log_dir, concurrency=1).wait_ready()
        try:
            runs = client.wait_many([*low, high], timeout=60)
        finally:
            worker.stop()
    order = sorted(runs.values(), key=lambda r: r.started_at)  # type: ignore[arg-type,return-value]
    assert order[0].id == high


def test_worker_waits_with_backoff_for_an_unreachable_database(
    redis_url: str, log_dir: Path
) -> None:
    env = service_env(redis_url, "postgresql://postgres@127.0.0.1:1/none", "w.")
    app = make_app(env)
    worker = WorkerProcess(app, env, "default", log_dir)
    try:
        wait_until(
            lambda: "retrying in 1.0s" in worker.output() or worker.proc.poll() is not None,
            30,
            "the worker to retry its database connection",
        )
        assert worker.proc.poll() is None, worker.output()
        assert "database unreachable" in worker.output()
    finally:
        worker.stop()
