"""RunRecorder's group commit: who writes, what a batch holds, and what every waiter learns.

tests/unit/test_outages.py covers the retry budget; mutation testing (benchmarks/mutation.py,
issue 17) found the batching itself unguarded: a task must not return before its own outcome
is committed, and an error must reach every run of the failed batch, not only its writer.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from conveyor.dlq.entry import NewDeadLetter
from conveyor.runs import recorder
from conveyor.runs.recorder import RecordingUnavailable, RunRecorder
from conveyor.runs.records import Claim, NewRun, Outcome
from conveyor.runs.status import RunStatus
from tests.support.waiting import wait_until


def outcome(run_id: str) -> Outcome:
    return Outcome(
        run=NewRun(id=run_id, agent="unit.rec", pool="default"), status=RunStatus.SUCCEEDED
    )


class GatedRuns:
    """A repository whose first record() waits for `gate`; it keeps every batch it wrote."""

    def __init__(self, fail_batch: int | None = None) -> None:
        self.gate, self.entered = threading.Event(), threading.Event()
        self.batches: list[list[str]] = []
        self.fail_batch = fail_batch
        self.claims: list[dict[str, Any]] = []

    def record(self, outcomes: list[Outcome]) -> None:
        if not self.batches and not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(10)
        self.batches.append([o.run.id for o in outcomes])
        if self.fail_batch == len(self.batches):
            raise ValueError(f"bad batch {len(self.batches)}")

    def claim(self, run: NewRun, worker: str, **options: Any) -> Claim:
        self.claims.append({"run": run.id, "worker": worker, **options})
        return Claim(run_id=run.id, claimed=True, status=RunStatus.STARTED, deliveries=3)


def record_in_threads(rec: RunRecorder, runs: GatedRuns, ids: list[str]) -> dict[str, object]:
    """The first id records alone while the others queue behind it; returns each caller's
    result (None) or exception once all have returned."""
    results: dict[str, object] = {}

    def call(run_id: str) -> None:
        try:
            results[run_id] = rec.record(outcome(run_id))
        except Exception as exc:
            results[run_id] = exc

    first = threading.Thread(target=call, args=(ids[0],))
    first.start()
    assert runs.entered.wait(10)
    rest = [threading.Thread(target=call, args=(i,)) for i in ids[1:]]
    for t in rest:
        t.start()
    wait_until(lambda: len(rec._pending) == len(rest), 10, "the others to queue up")
    assert not results, "nobody returns before their outcome is written"
    runs.gate.set()
    for t in [first, *rest]:
        t.join(10)
        assert not t.is_alive()
    return results


def test_waiting_outcomes_are_written_together_by_the_next_writer() -> None:
    runs = GatedRuns()
    rec = RunRecorder(runs)  # type: ignore[arg-type]
    results = record_in_threads(rec, runs, ["a", "b", "c", "d"])
    assert results == dict.fromkeys("abcd")
    assert runs.batches[0] == ["a"]
    assert [sorted(b) for b in runs.batches[1:]] == [["b", "c", "d"]], "one batch, one writer"
    rec.record(outcome("e"))
    assert runs.batches[-1] == ["e"], "the recorder is free again"


def test_a_batch_holds_at_most_max_batch_outcomes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder, "MAX_BATCH", 2)
    runs = GatedRuns()
    rec = RunRecorder(runs)  # type: ignore[arg-type]
    results = record_in_threads(rec, runs, ["a", "b", "c", "d", "e"])
    assert results == dict.fromkeys("abcde")
    assert [len(b) for b in runs.batches] == [1, 2, 2]
    assert sorted(run_id for batch in runs.batches for run_id in batch) == list("abcde")


def test_an_error_reaches_every_run_of_the_failed_batch_and_only_those() -> None:
    runs = GatedRuns(fail_batch=2)
    rec = RunRecorder(runs)  # type: ignore[arg-type]
    results = record_in_threads(rec, runs, ["a", "b", "c"])
    assert results["a"] is None
    for run_id in "bc":
        assert isinstance(results[run_id], ValueError), run_id
        assert str(results[run_id]) == "bad batch 2"
    rec.record(outcome("d"))
    assert runs.batches[-1] == ["d"], "a failed write does not leave the recorder writing"


def test_a_claim_passes_its_options_and_returns_the_repositorys_answer() -> None:
    runs = GatedRuns()
    rec = RunRecorder(runs)  # type: ignore[arg-type]
    run = NewRun(id="r9", agent="unit.rec", pool="default")
    claim = rec.claim(run, "w1", redelivered=True)
    assert (claim.run_id, claim.deliveries) == ("r9", 3)
    assert runs.claims == [{"run": "r9", "worker": "w1", "redelivered": True}]


class DownStore:
    """A dead-letter store that is down `failures` times, then stores the letter as id 7."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def add(self, letter: NewDeadLetter) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("INSERT INTO dead_letters ...", {}, Exception("server closed"))
        return 7


def test_a_dead_letter_rides_out_an_outage_and_names_its_run_when_it_cannot(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(recorder, "RETRY_FIRST_WAIT", 0.0)
    monkeypatch.setattr(recorder, "RETRY_WAIT_STEP", 0.0)
    letter = NewDeadLetter.model_construct(run_id="r7")
    store = DownStore(failures=2)
    rec = RunRecorder(GatedRuns(), retry_seconds=30)  # type: ignore[arg-type]
    assert rec.dead_letter(store, letter) == 7  # type: ignore[arg-type]
    assert store.calls == 3
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger=recorder.__name__),
        pytest.raises(RecordingUnavailable) as raised,
    ):
        RunRecorder(GatedRuns(), retry_seconds=0).dead_letter(DownStore(1), letter)  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        "giving up recording the dead letter of run r7 after 0s: "
        "OperationalError: (builtins.Exception) server closed"
    ]
    reason = str(raised.value.reason)
    assert reason.startswith("could not record the dead letter of run r7: ")
    assert reason.endswith(
        "for 0s (CONVEYOR_RECORD_RETRY_SECONDS): "
        "OperationalError: (builtins.Exception) server closed"
    ), "the first line of the error, without the statement SQLAlchemy appends"


def test_retries_wait_longer_each_time_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """RETRY_FIRST_WAIT, then RETRY_WAIT_STEP more each time, at most RETRY_MAX_WAIT (the
    waits are recorded, not slept)."""
    slept: list[float] = []
    monkeypatch.setattr("kombu.utils.functional.sleep", slept.append)
    letter = NewDeadLetter.model_construct(run_id="r8")
    store = DownStore(failures=12)
    with caplog.at_level(logging.WARNING, logger=recorder.__name__):
        assert RunRecorder(GatedRuns(), retry_seconds=300).dead_letter(store, letter) == 7  # type: ignore[arg-type]
    waits = [0.1, 0.6, 1.1, 1.6, 2.1, 2.6, 3.1, 3.6, 4.1, 4.6, 5.0, 5.0]
    assert [r.getMessage() for r in caplog.records] == [
        f"recording the dead letter of run r8 failed "
        f"(OperationalError: (builtins.Exception) server closed); retry {n} in {wait:.1f}s"
        for n, wait in enumerate(waits, start=1)
    ]
    assert sum(slept) == pytest.approx(sum(waits))


def test_a_budget_under_a_second_still_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kombu.utils.functional.sleep", lambda seconds: None)
    store = DownStore(failures=1)
    rec = RunRecorder(GatedRuns(), retry_seconds=0.5)  # type: ignore[arg-type]
    assert rec.dead_letter(store, NewDeadLetter.model_construct(run_id="r9")) == 7  # type: ignore[arg-type]
    assert store.calls == 2
