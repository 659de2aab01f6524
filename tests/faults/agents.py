"""The fault workload (loaded through CONVEYOR_AGENT_MODULES): agents whose effects land in
ledger tables of the run database, so a test can count them after a fault.

- `fault_executions` gets a row every time an agent body starts, outside any effect: a
  fault that made a run execute again shows there, and its row says which process ran it.
- `fault_ledger` has no unique constraint: an effect that happened twice is two rows.
- `fault_kv` is the idempotent agent's upsert target.
"""

from __future__ import annotations

import os
import time

from sqlalchemy import Connection, Engine, text

from conveyor import TransientError, agent, current_run, effect_once
from conveyor.models.db import engine_for

LEDGER = "faults.ledger"
IDEMPOTENT = "faults.idempotent"
FLAKY = "faults.flaky"
HOLD_LIMIT = 300.0
HOLD_POLL = 0.02

TABLES = (
    """CREATE TABLE IF NOT EXISTS fault_executions (
        id bigserial PRIMARY KEY, run_id text NOT NULL, agent text NOT NULL, pid int NOT NULL,
        attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    """CREATE TABLE IF NOT EXISTS fault_ledger (
        id bigserial PRIMARY KEY, run_id text NOT NULL, tag int NOT NULL, pid int NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    """CREATE TABLE IF NOT EXISTS fault_kv (
        run_id text PRIMARY KEY, tag int NOT NULL, writes int NOT NULL DEFAULT 1)""",
)


def create_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        for statement in TABLES:
            conn.execute(text(statement))


def _run_engine() -> Engine:
    url = current_run().settings.database_url
    assert url is not None
    return engine_for(url)


def _write_ledger(tag: int) -> int:
    """The non-idempotent effect: one ledger row, committed with its effect_once marker;
    returns the row's id (a redelivery gets the first delivery's id back)."""
    run_id = current_run().id

    def insert(conn: Connection) -> int:
        return int(
            conn.execute(
                text(
                    "INSERT INTO fault_ledger (run_id, tag, pid) VALUES (:run_id, :tag, :pid) "
                    "RETURNING id"
                ),
                {"run_id": run_id, "tag": tag, "pid": os.getpid()},
            ).scalar_one()
        )

    return effect_once(insert)


def _mark_started() -> None:
    """Append this execution, committed at once, so a test can await "mid-task"."""
    run = current_run()
    with _run_engine().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO fault_executions (run_id, agent, pid, attempt) "
                "VALUES (:run_id, :agent, :pid, :attempt)"
            ),
            {"run_id": run.id, "agent": run.agent, "pid": os.getpid(), "attempt": run.attempt},
        )


def _hold(path: str) -> None:
    """Wait until the file `path` exists: a test creates it once its fault has begun, so
    whatever the run does next meets the fault. At most HOLD_LIMIT seconds, so a test that
    failed before releasing leaves no run waiting for ever."""
    deadline = time.monotonic() + HOLD_LIMIT
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(HOLD_POLL)


@agent(name=LEDGER)
def ledger(
    tag: int, seconds: float = 0.0, after: float = 0.0, hold: str = "", hold_before: str = ""
) -> int:
    """Not idempotent: works `seconds`, writes one ledger row through effect_once, then works
    `after` more seconds (a fault there hits a run whose effect is committed) and, given a
    `hold` file, waits until the test creates it (then the fault surely meets the run after
    its effect); `hold_before` waits the same way before the effect. Returns the ledger
    row's id."""
    _mark_started()
    time.sleep(seconds)
    if hold_before:
        _hold(hold_before)
    row = _write_ledger(tag)
    time.sleep(after)
    if hold:
        _hold(hold)
    return row


@agent(name=IDEMPOTENT, idempotent=True)
def idempotent(tag: int, seconds: float = 0.0, after: float = 0.0) -> int:
    """Idempotent by construction: an upsert keyed by the run id, safe to repeat."""
    _mark_started()
    time.sleep(seconds)
    with _run_engine().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO fault_kv (run_id, tag) VALUES (:run_id, :tag) ON CONFLICT (run_id) "
                "DO UPDATE SET writes = fault_kv.writes + 1"
            ),
            {"run_id": current_run().id, "tag": tag},
        )
    time.sleep(after)
    return tag


@agent(name=FLAKY, retries=2, retry_backoff=60, retry_backoff_max=600)
def flaky(tag: int, seconds: float = 0.0, after: float = 0.0) -> int:
    """Fails its first attempt with a transient error, whose retry backoff (up to 60 s) is
    far longer than a short Redis visibility timeout; then writes its ledger row."""
    _mark_started()
    if current_run().attempt == 1:
        raise TransientError("first attempt fails")
    return _write_ledger(tag)
