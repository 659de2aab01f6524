"""effect_once on a real database: one commit per key, however many deliveries, and two
deliveries at once serialise on the marker."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from conveyor import ConveyorError, effect_once
from conveyor.analytics.retention import RetentionPolicy, purge_runs
from conveyor.context import RunContext, _current
from tests.faults.agents import LEDGER
from tests.faults.harness import FaultEnv, make_fault_env
from tests.support.services import PG_ADMIN, scratch_database

LEDGER_ROW = "INSERT INTO fault_ledger (run_id, tag, pid) VALUES (:id, 0, 0) RETURNING id"


@contextmanager
def delivery(fenv: FaultEnv, run_id: str) -> Iterator[None]:
    """Act as one delivery of run `run_id` of the ledger agent."""
    token = _current.set(
        RunContext(
            run_id,
            LEDGER,
            "default",
            "test",
            1,
            root_id=None,
            parent_id=None,
            settings=fenv.app.settings,
        )
    )
    try:
        yield
    finally:
        _current.reset(token)


def write_row(run_id: str) -> Callable[[Connection], dict[str, int]]:
    def effect(conn: Connection) -> dict[str, int]:
        return {"row": conn.execute(text(LEDGER_ROW), {"id": run_id}).scalar_one()}

    return effect


def deliver(fenv: FaultEnv, run_id: str, key: str | None = None) -> tuple[bool, Any]:
    """One delivery writing a ledger row through effect_once: (skipped?, result)."""
    calls: list[str] = []

    def effect(conn: Connection) -> dict[str, int]:
        calls.append(run_id)
        return write_row(run_id)(conn)

    with delivery(fenv, run_id):
        result = effect_once(effect, key=key)
    return not calls, result


def ledger_rows(fenv: FaultEnv, *run_ids: str) -> int:
    with fenv.engine.connect() as conn:
        query = text("SELECT count(*) FROM fault_ledger WHERE run_id = ANY(:ids)")
        return int(conn.execute(query, {"ids": list(run_ids)}).scalar_one())


@pytest.fixture(scope="module")
def effect_env(fault_redis: str, fault_logs: Path) -> Iterator[FaultEnv]:
    """One deployment for the whole module: every test uses runs of its own."""
    with scratch_database(PG_ADMIN, prefix="conveyor_fault") as url:
        yield make_fault_env(fault_redis, url, fault_logs)


def test_a_redelivery_finds_the_effect_done_and_its_writes_are_discarded(
    effect_env: FaultEnv,
) -> None:
    run_id = str(uuid.uuid4())
    done, first = deliver(effect_env, run_id)
    assert done is False
    assert deliver(effect_env, run_id) == (True, first), "the first delivery's result"
    assert ledger_rows(effect_env, run_id) == 1


def test_a_business_key_makes_the_effect_once_across_runs(effect_env: FaultEnv) -> None:
    runs = [str(uuid.uuid4()) for _ in range(3)]
    order = f"order-{uuid.uuid4().hex}"
    assert deliver(effect_env, runs[0], order)[0] is False
    assert deliver(effect_env, runs[1], order)[0] is True
    assert deliver(effect_env, runs[2], f"{order}-2")[0] is False
    assert ledger_rows(effect_env, *runs) == 2


def test_an_error_in_the_effect_rolls_back_effect_and_marker(effect_env: FaultEnv) -> None:
    run_id = str(uuid.uuid4())

    def crash(conn: Connection) -> None:
        write_row(run_id)(conn)
        raise RuntimeError("crashed mid-effect")

    with pytest.raises(RuntimeError), delivery(effect_env, run_id):
        effect_once(crash)
    assert ledger_rows(effect_env, run_id) == 0
    assert deliver(effect_env, run_id)[0] is False, "the next delivery does the effect"
    assert ledger_rows(effect_env, run_id) == 1


def test_a_result_that_is_not_json_rolls_back_naming_why(effect_env: FaultEnv) -> None:
    run_id = str(uuid.uuid4())

    def unkeepable(conn: Connection) -> object:
        write_row(run_id)(conn)
        return object()

    with pytest.raises(ValueError, match="must be JSON"), delivery(effect_env, run_id):
        effect_once(unkeepable)
    assert ledger_rows(effect_env, run_id) == 0


def test_retention_purges_a_run_with_its_effect_markers(effect_env: FaultEnv) -> None:
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    for run_id in (old, recent):
        deliver(effect_env, run_id)
    with effect_env.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO agent_runs (id, agent, pool, status, finished_at) VALUES "
                "(:old, :agent, 'default', 'succeeded', now() - interval '40 days'), "
                "(:recent, :agent, 'default', 'succeeded', now())"
            ),
            {"old": old, "recent": recent, "agent": LEDGER},
        )
    purge_runs(effect_env.engine, RetentionPolicy(days=30))
    with effect_env.engine.connect() as conn:
        kept = conn.execute(
            text("SELECT run_id FROM run_effects WHERE run_id = ANY(:ids)"), {"ids": [old, recent]}
        ).scalars()
        assert list(kept) == [recent]


@pytest.mark.parametrize("first_fails", [False, True])
def test_two_deliveries_at_once_wait_for_each_other(
    effect_env: FaultEnv, first_fails: bool
) -> None:
    """The second delivery blocks on the first's uncommitted marker; it then sees the effect
    done, or, when the first rolled back, does it itself."""
    run_id = str(uuid.uuid4())
    inside, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def first() -> None:
        def effect(conn: Connection) -> None:
            write_row(run_id)(conn)
            inside.set()
            release.wait(30)
            if first_fails:
                raise RuntimeError("first delivery crashed")

        try:
            with delivery(effect_env, run_id):
                effect_once(effect)
        except RuntimeError:
            outcome["first"] = "rolled back"

    def second() -> None:
        outcome["second"] = deliver(effect_env, run_id)[0]

    threads = [threading.Thread(target=t) for t in (first, second)]
    _start(threads[0])
    assert inside.wait(30)
    _start(threads[1])
    threads[1].join(1)
    assert threads[1].is_alive(), "the second delivery waits for the first's marker"
    release.set()
    for thread in threads:
        thread.join(30)
    assert outcome["second"] is (not first_fails)
    assert ledger_rows(effect_env, run_id) == 1


def _start(thread: threading.Thread) -> None:
    thread.daemon = True
    thread.start()


@pytest.mark.parametrize(
    ("key", "error"),
    [("", "1..512 characters"), ("k" * 513, "1..512 characters"), ("a\x00b", "NUL")],
)
def test_a_bad_key_is_refused_naming_the_limit(effect_env: FaultEnv, key: str, error: str) -> None:
    with pytest.raises(ValueError, match=error), delivery(effect_env, "r"):
        effect_once(write_row("r"), key=key)
    assert ledger_rows(effect_env, "r") == 0


def test_effect_once_outside_an_agent_says_where_it_works() -> None:
    with pytest.raises(ConveyorError, match="inside a running agent"):
        effect_once(write_row("r"))
