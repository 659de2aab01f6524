"""The asyncio pool on a real worker: many runs in flight in one process, each its own run."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from conveyor import Client, ConveyorApp, RunStatus
from conveyor.agents import registry
from conveyor.demo.summary import peak_in_flight
from tests.integration.conftest import make_app, service_env
from tests.support.workers import WorkerProcess

IO_AGENTS = ("tests.io_wait", "tests.io_sync", "tests.io_soft", "tests.io_stubborn")
SLOTS = 400


@pytest.fixture(scope="module")
def io_env(redis_url: str, database_url: str) -> dict[str, str]:
    env = service_env(redis_url, database_url, f"aio{uuid.uuid4().hex[:6]}.")
    env["CONVEYOR_AGENT_MODULES"] = "tests.support.agents,tests.support.io_agents"
    env["CONVEYOR_POOLS"] = f'{{"io": {{"kind": "asyncio", "concurrency": {SLOTS}}}}}'
    return env


@pytest.fixture(scope="module")
def io_app(io_env: dict[str, str]) -> Iterator[ConveyorApp]:
    yield make_app(io_env)
    for name in IO_AGENTS:  # other tests' apps in this process have no `io` pool
        registry._agents.pop(name, None)
    sys.modules.pop("tests.support.io_agents", None)


@pytest.fixture(scope="module")
def io_worker(
    io_app: ConveyorApp, io_env: dict[str, str], log_dir: Path
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(io_app, io_env, "io", log_dir).wait_ready()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def io_client(io_app: ConveyorApp, io_worker: WorkerProcess) -> Iterator[Client]:
    with Client(io_app) as client:
        yield client


def commits(database_url: str) -> int:
    """Transactions committed in the test database so far (each autocommit statement is one)."""
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        conn.execute("SELECT pg_stat_clear_snapshot()")
    assert row is not None
    return int(row[0])


def test_one_process_keeps_hundreds_of_waiting_runs_in_flight(
    io_client: Client, database_url: str
) -> None:
    before = commits(database_url)
    started = time.monotonic()
    ids = io_client.submit_many("tests.io_wait", [{"seconds": 2.0} for _ in range(SLOTS)])
    runs = io_client.wait_many(ids, timeout=120)
    wall = time.monotonic() - started
    written = commits(database_url) - before
    assert written < SLOTS / 2, f"{written} commits for {SLOTS} runs: claims and outcomes grouped"
    assert all(r.status is RunStatus.SUCCEEDED for r in runs.values())
    assert len({r.worker for r in runs.values()}) == 1, "one worker process ran them all"
    spans = [(r.started_at.timestamp(), r.finished_at.timestamp()) for r in runs.values()]  # type: ignore[union-attr]
    assert peak_in_flight(spans) >= SLOTS * 0.9, f"peak {peak_in_flight(spans)}, wall {wall:.1f}s"
    for run_id, run in runs.items():
        assert run.output["before"] == run.output["after"] == run_id, "current_run() per run"


def test_mixed_outcomes_each_end_right(io_client: Client, io_app: ConveyorApp) -> None:
    modes = ["ok", "transient", "fail"] * 40
    ids = io_client.submit_many(
        "tests.io_wait", [{"seconds": 0.5, "mode": m, "key": str(i)} for i, m in enumerate(modes)]
    )
    queue = io_app.agent_queue(io_app.agents.get("tests.io_wait"))
    bad = [io_app.send_task("tests.io_wait", kwargs={"seconds": "soon"}, queue=queue).id]
    runs = io_client.wait_many([*ids, *bad], timeout=120)
    for run_id, mode in zip(ids, modes, strict=True):
        run = runs[run_id]
        if mode == "fail":
            assert run.status is RunStatus.FAILED and run.error_type == "ValueError"
        else:
            assert run.status is RunStatus.SUCCEEDED, run.error_message
            assert run.output["before"] == run.output["after"] == run_id
            assert run.attempts == (2 if mode == "transient" else 1)
    assert runs[bad[0]].status is RunStatus.REJECTED
    ok = ids[0]
    assert io_app.AsyncResult(ok).get(timeout=10) == runs[ok].output, "Celery's result too"


def test_sync_agents_run_in_the_pools_threads_and_it_reports_its_slots(
    io_client: Client, io_app: ConveyorApp, io_worker: WorkerProcess
) -> None:
    handles = [io_client.send(io_app.agents.get("tests.io_sync"), value=i) for i in range(20)]
    assert sorted(h.result(timeout=60)["value"] for h in handles) == list(range(20))
    stats = io_app.control.inspect(destination=[io_worker.node], timeout=5).stats() or {}
    pool = stats[io_worker.node]["pool"]
    assert pool["max-concurrency"] == SLOTS
    assert pool["implementation"].endswith("AsyncIOPool")


def test_the_soft_limit_cancels_the_coroutine_which_may_clean_up(io_client: Client) -> None:
    key = f"io-soft-{uuid.uuid4().hex}"
    run = io_client.wait(io_client.submit("tests.io_soft", {"seconds": 30, "key": key}), 30)
    assert run.status is RunStatus.FAILED and run.error_type == "SoftTimeLimitExceeded"
    assert redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).get(key) == b"cleaned up"


def test_the_hard_limit_fails_a_run_that_ignores_the_soft_one(io_client: Client) -> None:
    started = time.monotonic()
    run = io_client.wait(io_client.submit("tests.io_stubborn", {"seconds": 30}), 30)
    assert run.status is RunStatus.FAILED and run.error_type == "TimeLimitExceeded"
    assert time.monotonic() - started < 10, "freed at the hard limit, not at the end"
