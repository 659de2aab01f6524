"""RunRepository's promises, called in-process on a real PostgreSQL (issue 17).

The worker tests reach the claim and the recording of outcomes only through a whole run, where
a wrong delivery count, a lost output or an enqueue that publishes a taken key can go unseen.
These call each method directly and check the row it leaves. Mutation testing
(benchmarks/mutation.py) found these behaviours unguarded.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import text

from conveyor.models.db import engine_for
from conveyor.runs.records import NewRun, Outcome
from conveyor.runs.repository import RunRepository
from conveyor.runs.status import RunStatus


@pytest.fixture(scope="module")
def repo(database_url: str) -> Iterator[RunRepository]:
    engine = engine_for(database_url)
    yield RunRepository(engine)
    engine.dispose()


def new_run(agent: str, key: str | None = None, **fields: object) -> NewRun:
    return NewRun(
        id=str(uuid.uuid4()), agent=agent, pool="default", queue="q.default",
        input={"n": 1}, idempotency_key=key, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def agent_name() -> str:
    return f"tests.guards.{uuid.uuid4().hex[:8]}"


def row(repo: RunRepository, run_id: str) -> dict[str, object]:
    with repo.engine.connect() as conn:
        found = conn.execute(text("SELECT * FROM agent_runs WHERE id = :id"), {"id": run_id})
        return dict(found.one()._mapping)


def test_enqueue_without_keys_publishes_first_then_writes_the_queued_rows(
    repo: RunRepository,
) -> None:
    runs = [new_run(agent_name()), new_run(agent_name())]
    seen_in_publish: list[object] = []

    def publish(batch: list[NewRun]) -> None:
        seen_in_publish.extend(repo.get(r.id) for r in batch)
        assert [r.id for r in batch] == [r.id for r in runs]

    assert repo.enqueue(runs, publish) == {r.id: r.id for r in runs}
    assert seen_in_publish == [None, None], "published before it is recorded"
    for run in runs:
        stored = repo.get(run.id)
        assert stored is not None
        assert (stored.status, stored.agent, stored.queue, stored.input) == (
            RunStatus.QUEUED, run.agent, "q.default", {"n": 1},
        )  # fmt: skip
    assert repo.enqueue([], publish) == {}


def test_enqueue_with_keys_publishes_only_runs_whose_key_is_free(repo: RunRepository) -> None:
    agent = agent_name()
    first, other, again, plain = (
        new_run(agent, "k1"), new_run(agent, "k2"), new_run(agent, "k1"), new_run(agent)
    )  # fmt: skip
    published: list[list[str]] = []

    def publish(batch: list[NewRun]) -> None:
        published.append([r.id for r in batch])

    owners = repo.enqueue([first, other, again, plain], publish)
    assert owners == {
        first.id: first.id,
        other.id: other.id,
        again.id: first.id,
        plain.id: plain.id,
    }
    assert published == [[first.id, other.id, plain.id]]
    assert repo.get(again.id) is None
    later = new_run(agent, "k2")
    assert repo.enqueue([later], publish) == {later.id: other.id}
    assert published[-1] == [] and repo.get(later.id) is None
    assert repo.get(first.id).status is RunStatus.QUEUED  # type: ignore[union-attr]

    # a key is per agent: another agent's run with the same key is its own owner
    mine = new_run(agent_name(), "k1")
    assert repo.enqueue([mine], publish) == {mine.id: mine.id}
    twin = NewRun(**{**mine.model_dump(), "id": str(uuid.uuid4())})
    assert repo.enqueue([twin], publish) == {twin.id: mine.id}
    assert repo.claim(twin, "w").duplicate_of == mine.id


def test_a_keyed_run_whose_publish_fails_does_not_keep_its_key(repo: RunRepository) -> None:
    """Insert and publish are one transaction: a failed publish leaves no row holding the key."""
    agent = agent_name()
    lost = new_run(agent, "once")

    def broker_down(batch: list[NewRun]) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        repo.enqueue([lost], broker_down)
    assert repo.get(lost.id) is None
    retry = new_run(agent, "once")
    published: list[NewRun] = []
    assert repo.enqueue([retry], published.extend) == {retry.id: retry.id}
    assert [r.id for r in published] == [retry.id]


def test_a_database_down_at_submit_does_not_fail_a_published_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Runs without a key are published first; if the queued row cannot be written the submit
    still succeeds, and the warning names the runs (the worker records them when it claims)."""
    dead = RunRepository(engine_for("postgresql://u@127.0.0.1:1/none?connect_timeout=2"))
    run = new_run(agent_name())
    published: list[NewRun] = []
    with caplog.at_level(logging.WARNING, logger="conveyor.runs.repository"):
        assert dead.enqueue([run], published.extend) == {run.id: run.id}
    assert [r.id for r in published] == [run.id]
    [warning] = [r.getMessage() for r in caplog.records if "published" in r.getMessage()]
    assert warning.startswith(f"1 run(s) published but not recorded as queued, e.g. {run.id}: ")
    assert warning.endswith("; their worker records them")
    detail = warning.split(f"{run.id}: ", 1)[1].removesuffix("; their worker records them")
    assert "127.0.0.1" in detail and "\n" not in detail, "the first line of the error"


def test_a_claim_starts_the_run_and_counts_deliveries_of_the_attempt(
    repo: RunRepository,
) -> None:
    run = new_run(agent_name(), enqueued_at=datetime(2026, 1, 2, tzinfo=UTC))
    repo.enqueue([run], lambda batch: None)
    claim = repo.claim(run, "w1")
    assert (claim.run_id, claim.claimed, claim.status, claim.deliveries) == (
        run.id, True, RunStatus.STARTED, 1,
    )  # fmt: skip
    assert claim.duplicate_of is None and claim.output is None
    stored = row(repo, run.id)
    assert (stored["status"], stored["worker"], stored["attempts"], stored["deliveries"]) == (
        "started", "w1", 1, 1,
    )  # fmt: skip
    assert stored["started_at"] is not None
    assert stored["enqueued_at"] == datetime(2026, 1, 2, tzinfo=UTC)

    # the worker died: the next claim is the second delivery of the same attempt
    again = repo.claim(run, "w2")
    assert (again.claimed, again.deliveries) == (True, 2)
    assert (row(repo, run.id)["worker"], row(repo, run.id)["attempts"]) == ("w2", 2)

    # a retry starts a new attempt: deliveries count from 1 again
    repo.record([Outcome(run=run, status=RunStatus.RETRYING, attempts=2, worker="w2")])
    assert repo.claim(run, "w3").deliveries == 1

    repo.record([Outcome(run=run, status=RunStatus.SUCCEEDED, output={"x": [1, 2]}, attempts=3)])
    done = repo.claim(run, "w4")
    assert (done.claimed, done.status, done.output, done.deliveries) == (
        False, RunStatus.SUCCEEDED, {"x": [1, 2]}, 0,
    )  # fmt: skip
    assert row(repo, run.id)["worker"] == "w3", "a run in a final state is not claimed again"


def test_a_first_claim_writes_the_row_and_a_redelivery_counts_two(repo: RunRepository) -> None:
    """A run the producer never recorded (its database write failed) is written by the claim;
    a redelivered message of an idempotent agent (no earlier claim) is its second delivery."""
    plain, redelivered = new_run(agent_name()), new_run(agent_name())
    assert repo.claim(plain, "w").deliveries == 1
    assert repo.claim(redelivered, "w", redelivered=True).deliveries == 2
    stored = row(repo, plain.id)
    assert (stored["status"], stored["input"], stored["queue"]) == (
        "started",
        {"n": 1},
        "q.default",
    )
    assert stored["enqueued_at"] is not None


def test_a_claim_of_a_run_whose_key_another_run_holds_names_that_run(
    repo: RunRepository,
) -> None:
    agent = agent_name()
    owner, duplicate = new_run(agent, "order-1"), new_run(agent, "order-1")
    repo.enqueue([owner], lambda batch: None)
    claim = repo.claim(duplicate, "w")
    assert (claim.run_id, claim.claimed, claim.status, claim.duplicate_of) == (
        duplicate.id, False, RunStatus.CANCELLED, owner.id,
    )  # fmt: skip
    assert repo.get(duplicate.id) is None


def test_record_keeps_the_last_outcome_of_a_batch_and_the_error_history(
    repo: RunRepository,
) -> None:
    run = new_run(agent_name())
    repo.claim(run, "w1")
    started = row(repo, run.id)["started_at"]
    failed = Outcome(
        run=run, status=RunStatus.RETRYING, error_type="Boom", worker="w1", attempts=1,
        error_message="postgresql://u:hunter2@db/x refused", error_traceback="tb",
    )  # fmt: skip
    repo.record([failed])
    finished = datetime.now(UTC)
    last = Outcome(
        run=run, status=RunStatus.SUCCEEDED, output=[1, "two"], attempts=1,
        started_at=finished - timedelta(hours=1), finished_at=finished,
    )  # fmt: skip
    repo.record([failed, last])
    stored = row(repo, run.id)
    assert (stored["status"], stored["output"], stored["error_type"]) == (
        "succeeded",
        [1, "two"],
        None,
    )
    assert stored["worker"] == "w1", "a missing worker keeps the one that claimed it"
    assert stored["attempts"] == 1 and stored["started_at"] == started
    assert stored["finished_at"] == finished
    errors = stored["errors"]
    assert isinstance(errors, list) and [e["type"] for e in errors] == ["Boom"]
    assert "hunter2" not in str(errors) and "hunter2" not in str(stored)
    got = repo.get(run.id)
    assert got is not None and got.output == [1, "two"] and got.finished_at == finished


def test_a_cancelled_run_stays_cancelled_and_only_a_waiting_run_can_be_cancelled(
    repo: RunRepository, database_url: str
) -> None:
    waiting, retrying, started = (new_run(agent_name()) for _ in range(3))
    repo.enqueue([waiting, retrying, started], lambda batch: None)
    repo.record([Outcome(run=retrying, status=RunStatus.RETRYING)])
    repo.claim(started, "w")
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as listener:
        listener.execute("LISTEN conveyor_runs")
        assert repo.cancel(waiting.id) is True
        notes = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert notes == [f"{waiting.id} cancelled"]
    assert repo.cancel(retrying.id) is True
    assert repo.cancel(started.id) is False
    assert repo.cancel(waiting.id) is False, "already cancelled"
    assert repo.cancel(str(uuid.uuid4())) is False
    cancelled = row(repo, waiting.id)
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert row(repo, started.id)["status"] == "started"
    repo.record([Outcome(run=waiting, status=RunStatus.SUCCEEDED, output=1)])
    assert row(repo, waiting.id)["status"] == "cancelled"
    assert repo.claim(waiting, "w").claimed is False


def test_find_get_many_and_counts_filter_as_asked(repo: RunRepository) -> None:
    agent, other = agent_name(), agent_name()
    base = datetime(2026, 3, 1, tzinfo=UTC)
    runs = [new_run(agent, enqueued_at=base + timedelta(minutes=i)) for i in range(4)]
    runs.append(new_run(other, enqueued_at=base + timedelta(minutes=10)))
    repo.enqueue(runs, lambda batch: None)
    repo.record([Outcome(run=runs[1], status=RunStatus.FAILED, error_type="E")])
    ids = [r.id for r in runs]

    assert [r.id for r in repo.find(agent=agent)] == ids[3::-1], "newest first"
    assert [r.id for r in repo.find(agent=agent, limit=2)] == [ids[3], ids[2]]
    assert [r.id for r in repo.find(agent=agent, status="failed")] == [ids[1]]
    assert [r.id for r in repo.find(agent=agent, status=RunStatus.QUEUED)] == [
        ids[3], ids[2], ids[0],
    ]  # fmt: skip
    window = repo.find(
        agent=agent, since=base + timedelta(minutes=1), until=base + timedelta(minutes=3)
    )
    assert [r.id for r in window] == [ids[2], ids[1]], "since is inclusive, until is not"
    with pytest.raises(ValueError):
        repo.find(status="finished")

    assert repo.count_by_status(agent) == {"queued": 3, "failed": 1}
    assert repo.count_by_status(other) == {"queued": 1}
    assert repo.count_by_status()["queued"] >= 4

    missing = str(uuid.uuid4())
    many = repo.get_many([ids[0], ids[4], missing])
    assert sorted(many) == sorted([ids[0], ids[4]])
    assert many[ids[4]].agent == other and many[ids[0]].status is RunStatus.QUEUED
    assert repo.get(missing) is None


def test_an_output_with_nul_characters_is_stored_and_read_back_whole(repo: RunRepository) -> None:
    """PostgreSQL's JSONB cannot hold U+0000: such outputs are escaped on the way in and restored
    on the way out, in the batch write of outcomes too."""
    run = new_run(agent_name())
    output = {"text": "a\x00b", "list": ["\x00"]}
    repo.record(
        [Outcome(run=run, status=RunStatus.SUCCEEDED, output=output, error_message="x\x00y")]
    )
    stored = repo.get(run.id)
    assert stored is not None and stored.output == output
