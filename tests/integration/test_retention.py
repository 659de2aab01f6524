"""Run retention on a database of its own: what goes, what stays, and batches that are bounded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from conveyor import Client
from conveyor.analytics.retention import RetentionPolicy, purge_runs
from conveyor.models.db import engine_for
from conveyor.models.migrate import upgrade
from tests.integration.conftest import make_app, service_env
from tests.support.services import scratch_database
from tests.support.workers import WorkerProcess

NOW = datetime.now(UTC)
DAY = timedelta(days=1)
RUNS = {
    # id: (status, finished days ago or None, expected to be purged)
    "ok-old-1": ("succeeded", 31, True),
    "ok-old-2": ("succeeded", 200, True),
    "ok-old-3": ("cancelled", 45, True),
    "ok-new": ("succeeded", 29, False),
    "failed-mid": ("failed", 60, False),
    "rejected-mid": ("rejected", 89, False),
    "failed-old": ("failed", 91, True),
    "rejected-old": ("rejected", 365, True),
    "unfinished": ("started", None, False),
    "queued-ancient": ("queued", None, False),
}


@pytest.fixture
def engine(pg_admin: str) -> Iterator[Engine]:
    """A fresh migrated database: the shared one may hold other tests' old runs."""
    with scratch_database(pg_admin, "conveyor_retention") as url:
        psycopg_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        upgrade(psycopg_url)
        yield engine_for(psycopg_url)
        engine_for(psycopg_url).dispose()


def insert_runs(engine: Engine) -> None:
    rows = [
        {
            "id": run_id,
            "status": status,
            "enqueued": NOW - timedelta(days=400),
            "finished": None if days is None else NOW - days * DAY,
        }
        for run_id, (status, days, _) in RUNS.items()
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO agent_runs (id, agent, pool, status, enqueued_at, finished_at) "
                "VALUES (:id, 'unit.agent', 'default', :status, :enqueued, :finished)"
            ),
            rows,
        )
        conn.execute(
            text(
                "INSERT INTO run_rollups (grain, bucket, agent, pool, runs, succeeded, failed, "
                "rejected, cancelled, retries, throughput) VALUES ('minute', :bucket, "
                "'unit.agent', 'default', 1, 1, 0, 0, 0, 0, 0.1)"
            ),
            {"bucket": NOW - 200 * DAY},
        )


def remaining(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT id FROM agent_runs")).scalars())


def test_old_runs_go_failures_stay_longer_and_batches_are_bounded(engine: Engine) -> None:
    insert_runs(engine)
    result = purge_runs(engine, RetentionPolicy(days=30, failed_days=90, batch=2))
    purged = {run_id for run_id, (_, _, gone) in RUNS.items() if gone}
    assert remaining(engine) == set(RUNS) - purged
    assert (result.deleted, result.deleted_failed) == (5, 2)
    assert result.largest_batch == 2
    assert result.batches == 3  # 2 + 2 + 1: the short batch says none are left
    assert result.complete
    assert NOW - 91 * DAY < result.failed_cutoff < result.cutoff < NOW - 29 * DAY
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM run_rollups")).scalar() == 1

    again = purge_runs(engine, RetentionPolicy(days=30, failed_days=90, batch=2))
    assert (again.deleted, again.batches, again.complete) == (0, 1, True)


def test_a_batch_budget_stops_the_purge_and_the_next_run_carries_on(engine: Engine) -> None:
    insert_runs(engine)
    policy = RetentionPolicy(days=30, failed_days=90, batch=1)
    first = purge_runs(engine, policy, max_batches=2)
    assert (first.deleted, first.batches, first.complete) == (2, 2, False)
    rest = purge_runs(engine, policy)
    assert (rest.deleted, rest.complete) == (3, True)
    assert remaining(engine) == {run_id for run_id, (_, _, gone) in RUNS.items() if not gone}


def test_longer_windows_keep_more(engine: Engine) -> None:
    insert_runs(engine)
    result = purge_runs(engine, RetentionPolicy(days=100, failed_days=400, batch=5000))
    assert (result.deleted, result.batches) == (1, 1)
    assert "ok-old-2" not in remaining(engine)


def test_the_agent_purges_with_the_settings_on_an_analytics_worker(
    pg_admin: str, redis_url: str, log_dir: Path
) -> None:
    with scratch_database(pg_admin, "conveyor_retention") as url:
        env = {
            **service_env(redis_url, url, f"r{uuid.uuid4().hex[:8]}."),
            "CONVEYOR_RETENTION_DAYS": "100",
            "CONVEYOR_RETENTION_FAILED_DAYS": "300",
            "CONVEYOR_RETENTION_BATCH": "1",
        }
        app = make_app(env)
        assert app.settings.database_url is not None
        upgrade(app.settings.database_url)
        engine = engine_for(app.settings.database_url)
        insert_runs(engine)
        worker = WorkerProcess(app, env, "analytics", log_dir)
        try:
            worker.wait_ready()
            with Client(app) as client:
                output = client.result(client.submit("analytics.retention", {}), timeout=60)
        finally:
            worker.stop()
            engine.dispose()
        assert (output["deleted"], output["deleted_failed"]) == (2, 1)  # ok-old-2, rejected-old
        assert output["batches"] == 3 and output["largest_batch"] == 1 and output["complete"]
