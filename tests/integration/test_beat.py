"""Two `conveyor beat` processes: one leader, no tick sent twice, failover after kill -9."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from conveyor.beat import DEFAULT_SCHEDULE
from conveyor.beat.leader import leader_name, lock_key
from conveyor.metrics.beat import BeatCollector
from conveyor.models.db import engine_for
from conveyor.workers.supervisor import stop_processes
from tests.integration.conftest import make_app, service_env
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, WorkerProcess

EVERY = 1.0
RETRY = 1.0
"""The documented takeover bound after kill -9: one retry interval (plus a round trip)."""
SLACK = 1.5
"""Process scheduling and polling on a loaded CI machine."""


class Beat:
    """One `conveyor beat` subprocess, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "beat", "--loglevel", "INFO"],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.holder = f"{socket.gethostname()}:{self.proc.pid}"

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        stop_processes([self.proc], grace=10)
        self._out.close()


@pytest.fixture
def beat_env(redis_url: str, database_url: str) -> dict[str, str]:
    schedule: dict[str, float] = {name: 0 for name in DEFAULT_SCHEDULE}
    return {
        **service_env(redis_url, database_url, f"b{uuid.uuid4().hex[:8]}."),
        "CONVEYOR_BEAT_SCHEDULE": json.dumps({**schedule, "tests.tick": EVERY}),
        "CONVEYOR_BEAT_LOCK_RETRY_SECONDS": str(RETRY),
    }


@pytest.fixture
def worker(beat_env: dict[str, str], log_dir: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(make_app(beat_env), beat_env, "default", log_dir, kind="threads")
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def leader(engine: Engine, name: str) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT holder FROM beat_leader WHERE name = :n"), {"n": name})
        return row.scalar()


def ticks(engine: Engine, queue: str) -> list[datetime]:
    """When each tests.tick run was sent (the enqueue time beat's publish stamped)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT enqueued_at FROM agent_runs WHERE agent = 'tests.tick' AND queue = :q "
                "ORDER BY enqueued_at"
            ),
            {"q": queue},
        )
        return list(rows.scalars())


def lock_holders(engine: Engine, name: str) -> list[str]:
    """application_name of every session holding the advisory lock (beat sets its holder)."""
    unsigned = lock_key(name) & 0xFFFF_FFFF_FFFF_FFFF
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
            ),
            {"hi": unsigned >> 32, "lo": unsigned & 0xFFFF_FFFF},
        )
        return list(rows.scalars())


def gaps(times: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


def test_two_beats_elect_one_leader_and_fail_over_after_kill_9(
    beat_env: dict[str, str], worker: WorkerProcess, database_url: str, log_dir: Path
) -> None:
    engine = engine_for(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    prefix = beat_env["CONVEYOR_QUEUE_PREFIX"]
    name, queue = f"{prefix}beat", f"{prefix}default"
    first = Beat(beat_env, log_dir / f"beat-{prefix}a.log")
    second: Beat | None = None
    try:
        wait_until(lambda: leader(engine, name) == first.holder, 60, "the first beat to lead")
        second = Beat(beat_env, log_dir / f"beat-{prefix}b.log")
        standby = second
        wait_until(lambda: "standing by" in standby.output(), 60, "the second beat to stand by")
        assert lock_holders(engine, name) == [f"conveyor-beat {first.holder}"]

        wait_until(lambda: len(ticks(engine, queue)) >= 6, 30, "six ticks")
        before = ticks(engine, queue)
        assert min(gaps(before)) >= 0.8 * EVERY, f"a tick was sent twice: {gaps(before)}"
        assert leader(engine, name) == first.holder
        assert len(lock_holders(engine, name)) == 1
        assert "standing by" in second.output() and " leads " not in second.output()
        mean = (before[-1] - before[0]).total_seconds() / (len(before) - 1)
        assert 0.95 * EVERY <= mean <= 1.3 * EVERY, f"not one beat's cadence: {gaps(before)}"

        os.killpg(first.proc.pid, signal.SIGKILL)
        killed = time.time()
        wait_until(lambda: leader(engine, name) == second.holder, 30, "the standby to lead")
        takeover = time.time() - killed
        print(f"\ntakeover after kill -9: {takeover:.2f}s")
        assert takeover <= RETRY + SLACK, f"takeover took {takeover:.2f}s"
        assert lock_holders(engine, name) == [f"conveyor-beat {second.holder}"]

        wait_until(lambda: len(ticks(engine, queue)) >= len(before) + 4, 30, "ticks to go on")
        after = ticks(engine, queue)
        assert min(gaps(after)) >= 0.8 * EVERY, f"a tick was sent twice: {gaps(after)}"
        across = (after[len(before)] - before[-1]).total_seconds()
        assert across <= EVERY + takeover + SLACK, f"ticks paused {across:.2f}s over failover"
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert second.proc.returncode == 0, second.output()
    assert lock_holders(engine, name) == []


def test_the_exporter_reads_the_leader_age(beat_env: dict[str, str]) -> None:
    settings = make_app(beat_env).settings
    assert settings.database_url is not None
    collector = BeatCollector(settings, ttl=0)
    assert collector.age() is None
    with engine_for(settings.database_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO beat_leader (name, holder, renewed_at) "
                "VALUES (:n, 'host:1', now() - interval '5 seconds')"
            ),
            {"n": leader_name(settings)},
        )
    age = collector.age()
    assert age is not None and 5 <= age < 60
    (family,) = collector.collect()
    assert len(family.samples) == 1 and family.samples[0].value >= age
