"""The asyncio pool's group commit claims many runs in one statement (RunRepository.claim_many):
each run gets the answer `claim` would have given it alone, on the real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError

from conveyor.models.db import engine_for
from conveyor.runs.records import ClaimRequest, NewRun, Outcome
from conveyor.runs.repository import RunRepository
from conveyor.runs.status import RunStatus


def new_run(key: str | None = None) -> NewRun:
    return NewRun(
        id=str(uuid.uuid4()), agent="tests.claim_many", pool="io", input={"x": 1},
        idempotency_key=key,
    )  # fmt: skip


def test_a_batch_claims_new_and_started_runs_and_leaves_finished_ones(database_url: str) -> None:
    repo = RunRepository(engine_for(database_url))
    fresh, restarted, done, failed = (new_run() for _ in range(4))
    repo.claim(restarted, "w0")
    repo.record([Outcome(run=done, status=RunStatus.SUCCEEDED, output={"y": 2})])
    repo.record([Outcome(run=failed, status=RunStatus.FAILED, error_type="ValueError")])
    claims = repo.claim_many(
        [ClaimRequest(fresh, "w1"), ClaimRequest(restarted, "w1"), ClaimRequest(done, "w1"),
         ClaimRequest(failed, "w1", redelivered=True)]
    )  # fmt: skip
    assert [c.run_id for c in claims] == [fresh.id, restarted.id, done.id, failed.id]
    assert [(c.claimed, c.status, c.deliveries) for c in claims[:2]] == [
        (True, RunStatus.STARTED, 1),
        (True, RunStatus.STARTED, 2),
    ]
    assert (claims[2].claimed, claims[2].status, claims[2].output) == (
        False, RunStatus.SUCCEEDED, {"y": 2},
    )  # fmt: skip
    assert (claims[3].claimed, claims[3].status) == (False, RunStatus.FAILED)
    stored = repo.get(fresh.id)
    assert stored is not None and stored.status is RunStatus.STARTED and stored.worker == "w1"
    assert stored.input == {"x": 1}


def test_a_redelivered_first_claim_counts_two_deliveries(database_url: str) -> None:
    repo = RunRepository(engine_for(database_url))
    run = new_run()
    (claim,) = repo.claim_many([ClaimRequest(run, "w1", redelivered=True)])
    assert claim.claimed and claim.deliveries == 2


def test_a_reused_key_fails_only_the_run_that_reused_it(database_url: str) -> None:
    repo = RunRepository(engine_for(database_url))
    key = f"order-{uuid.uuid4().hex}"
    owner, copy, other = new_run(key), new_run(key), new_run()
    repo.claim(owner, "w0")
    claims = repo.claim_many([ClaimRequest(copy, "w1"), ClaimRequest(other, "w1")])
    assert claims[0].duplicate_of == owner.id and not claims[0].claimed
    assert claims[1].claimed, "the other runs of the batch still start"


def test_the_same_run_twice_in_a_batch_is_claimed_twice_in_order(database_url: str) -> None:
    repo = RunRepository(engine_for(database_url))
    run = new_run()
    first, second = repo.claim_many([ClaimRequest(run, "w1"), ClaimRequest(run, "w2")])
    assert (first.deliveries, second.deliveries) == (1, 2)


def test_a_kept_connection_is_replaced_after_it_dies(database_url: str) -> None:
    repo = RunRepository(engine_for(database_url))
    repo.keep_connection()
    repo.claim_many([ClaimRequest(new_run(), "w1")])
    kept = repo._kept.conn
    with engine_for(database_url).connect() as admin:
        pid = kept.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    with pytest.raises((OperationalError, InterfaceError)):  # the recorder retries it
        repo.claim_many([ClaimRequest(new_run(), "w1")])
    (claim,) = repo.claim_many([ClaimRequest(new_run(), "w1")])
    assert claim.claimed and repo._kept.conn is not kept
