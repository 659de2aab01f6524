"""How a worker acts on the answer to its claim (conveyor.workers.steps.claim_run).

The worker tests reach the claim only through whole runs that are delivered once; mutation
testing (benchmarks/mutation.py, issue 17) found the redelivery count and the refusals
unguarded there. Here the recorder is a stand-in and each answer is given directly.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import Ignore

from conveyor.runs.records import Claim, NewRun, Outcome
from conveyor.runs.status import RunStatus
from conveyor.workers import steps

RUN = NewRun(id="r1", agent="unit.claim", pool="default", idempotency_key="order-1")


class Recorder:
    def __init__(self, answer: Claim) -> None:
        self.answer = answer
        self.claims: list[tuple[str, str, bool]] = []
        self.recorded: list[Outcome] = []

    def claim(self, run: NewRun, worker: str, *, redelivered: bool) -> Claim:
        self.claims.append((run.id, worker, redelivered))
        return self.answer

    def record(self, outcome: Outcome) -> None:
        self.recorded.append(outcome)


def task(answer: Claim, *, delivery_info: Any = None, idempotent: bool = False) -> Any:
    app = SimpleNamespace(recorder=Recorder(answer), settings=SimpleNamespace(max_deliveries=3))
    return SimpleNamespace(
        app=app,
        request=SimpleNamespace(delivery_info=delivery_info),
        agent=SimpleNamespace(idempotent=idempotent),
    )


def started(deliveries: int = 1) -> Claim:
    return Claim(run_id="r1", claimed=True, status=RunStatus.STARTED, deliveries=deliveries)


@pytest.mark.parametrize(
    ("delivery_info", "idempotent", "asked"),
    [
        ({"redelivered": True}, True, True),  # an idempotent agent's first claim: 2nd delivery
        ({"redelivered": True}, False, False),  # others were claimed before: the row counts
        ({"redelivered": False}, True, False),
        ({}, True, False),
        (None, True, False),
    ],
)
def test_a_claim_counts_a_redelivery_only_for_an_idempotent_agent(
    delivery_info: Any, idempotent: bool, asked: bool
) -> None:
    t = task(started(), delivery_info=delivery_info, idempotent=idempotent)
    assert steps.claim_run(t, RUN, "w1") is None, "claimed: go ahead"
    assert t.app.recorder.claims == [("r1", "w1", asked)]


def test_too_many_deliveries_give_up_on_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    given_up: list[tuple[Any, str, str, int]] = []
    monkeypatch.setattr(
        steps,
        "_give_up_on_lost_workers",
        lambda task, run, worker, deliveries, **_: given_up.append(
            (task, run.id, worker, deliveries)
        ),
    )
    assert steps.claim_run(task(started(3)), RUN, "w1") is None
    assert given_up == []
    lost = task(started(4))
    steps.claim_run(lost, RUN, "w1")
    assert given_up == [(lost, "r1", "w1", 4)]


def test_a_run_whose_key_another_run_holds_is_cancelled_naming_it() -> None:
    t = task(Claim(run_id="r1", claimed=False, status=RunStatus.CANCELLED, duplicate_of="r0"))
    with pytest.raises(Ignore):
        steps.claim_run(t, RUN, "w1")
    [outcome] = t.app.recorder.recorded
    assert (outcome.run.id, outcome.status, outcome.worker) == ("r1", RunStatus.CANCELLED, "w1")
    assert outcome.run.idempotency_key is None, "the key stays with its owner"
    assert outcome.error_type == "DuplicateIdempotencyKey"
    assert outcome.error_message == "idempotency key 'order-1' belongs to run r0"
    assert outcome.finished_at is not None


def test_a_finished_run_returns_its_output_or_is_not_run_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = Claim(run_id="r1", claimed=False, status=RunStatus.SUCCEEDED, output={"x": 1})
    t = task(done)
    with caplog.at_level(logging.INFO, logger=steps.__name__):
        assert steps.claim_run(t, RUN, "w1") is done
    assert [r.getMessage() for r in caplog.records] == [
        "run r1 is already succeeded; not running it again"
    ]
    assert t.app.recorder.recorded == []
    for status in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.REJECTED):
        with pytest.raises(Ignore):
            steps.claim_run(task(Claim(run_id="r1", claimed=False, status=status)), RUN, "w1")
