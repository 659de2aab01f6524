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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
TAKEOVER = RETRY + 5.0
"""How long a standby may take to lead after the leader's kill -9. The documented bound is one
retry interval plus a round trip (0.16-0.67 s measured on an idle machine); the 5 s more
cover the killed backend's exit, the standby's wake-up and its round trips on a shared CPU.
It is generous, yet half of what a takeover waiting on TCP keepalives (about 11 s) takes,
and a standby that stopped retrying never gets there."""
CADENCE = (0.75 * EVERY, 1.75 * EVERY)
"""The mean gap between one beat's ticks. Celery schedules the next tick one interval after
the last was sent, so a tick that waited for the CPU delays the ones after it: the mean is
the interval plus the average lateness, which stays far below 0.75 s even on a loaded
machine. The bounds fail a beat that sends at twice the rate (two dispatchers: 0.5) or at
half of it (1 tick per 2 s), or that stalls; they are not a measure of scheduling jitter."""
DOUBLE = 0.5 * EVERY
"""No two ticks closer than this: one sender cannot (each tick is scheduled a full interval
after the previous one was sent; only the time to stamp and publish it varies), while a tick
sent twice is two messages a few milliseconds apart."""
PAUSE = 3.0
"""Added to the measured takeover for the longest gap over the failover, for the new
leader's first fence and publish on a loaded machine."""


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


@dataclass(frozen=True)
class Tick:
    at: datetime
    """When it was sent (the enqueue time beat's publish stamped)."""
    sender: int
    """The pid of the beat process that sent it (its message's origin, `gen<pid>@host`)."""


def ticks(engine: Engine, queue: str) -> list[Tick]:
    """Every tests.tick run so far, in the order they were sent. The rows are written when a
    run ends (the agent is idempotent: no claim), so each carries the agent's output."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT enqueued_at, output FROM agent_runs WHERE agent = 'tests.tick' "
                "AND queue = :q ORDER BY enqueued_at"
            ),
            {"q": queue},
        )
        return [Tick(at, int(origin.split("@")[0].removeprefix("gen"))) for at, origin in rows]


def wait_ticks(
    engine: Engine, queue: str, enough: Callable[[list[Tick]], bool], what: str
) -> list[Tick]:
    """The ticks, once `enough(ticks)` holds."""
    found: list[Tick] = []

    def condition() -> bool:
        nonlocal found
        found = ticks(engine, queue)
        return enough(found)

    wait_until(condition, 30, what)
    return found


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


def gaps(sent: list[Tick]) -> list[float]:
    return [round((b.at - a.at).total_seconds(), 3) for a, b in itertools.pairwise(sent)]


def senders(sent: list[Tick]) -> set[int]:
    return {t.sender for t in sent}


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

        before = wait_ticks(engine, queue, lambda found: len(found) >= 6, "six ticks")
        assert senders(before) == {first.proc.pid}, f"a standby sent ticks: {before}"
        assert min(gaps(before)) >= DOUBLE, f"a tick was sent twice: {gaps(before)}"
        mean = (before[-1].at - before[0].at).total_seconds() / (len(before) - 1)
        low, high = CADENCE
        print(f"\nmean gap between ticks: {mean:.3f}s")
        assert low <= mean <= high, f"not one beat's cadence (mean {mean:.2f}s): {gaps(before)}"
        assert leader(engine, name) == first.holder
        assert len(lock_holders(engine, name)) == 1
        assert "standing by" in second.output() and " leads " not in second.output()

        os.killpg(first.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: leader(engine, name) == second.holder, TAKEOVER, "the standby to lead")
        takeover = time.monotonic() - killed
        print(f"\ntakeover after kill -9: {takeover:.2f}s (bound {TAKEOVER:g}s)")
        assert lock_holders(engine, name) == [f"conveyor-beat {second.holder}"]

        new_leader = second.proc.pid
        after = wait_ticks(
            engine,
            queue,
            lambda found: sum(t.sender == new_leader for t in found) >= 3,
            "three ticks from the new leader",
        )
        handover = sum(t.sender == first.proc.pid for t in after)
        expected = [first.proc.pid] * handover + [new_leader] * (len(after) - handover)
        assert [t.sender for t in after] == expected, f"two beats sent ticks: {after}"
        assert min(gaps(after)) >= DOUBLE, f"a tick was sent twice: {gaps(after)}"
        across = (after[handover].at - after[handover - 1].at).total_seconds()
        assert across <= EVERY + takeover + PAUSE, f"ticks paused {across:.2f}s over failover"
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
