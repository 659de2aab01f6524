"""Riding out outages: the run recorder's bounded retry, and the broker connection settings.

The database outage is played by a stand-in repository that raises what SQLAlchemy raises
while PostgreSQL restarts (tests/faults/test_service_faults.py restarts a real one).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import Reject
from sqlalchemy.exc import IntegrityError, OperationalError

from conveyor import results
from conveyor.agents import Registry
from conveyor.app import celery_config
from conveyor.config import load_settings
from conveyor.errors import ConfigError
from conveyor.outages import SOCKET_TIMEOUT
from conveyor.results import RPCResults
from conveyor.runs import recorder
from conveyor.runs.recorder import RecordingUnavailable, RunRecorder
from conveyor.runs.records import Claim, NewRun, Outcome
from conveyor.runs.status import RunStatus
from tests.unit.support import FAKE_AMQP, FAKE_BROKER, FAKE_DATABASE, build_app

RUN = NewRun(id="r1", agent="unit.outage", pool="default")
DOWN = OperationalError("INSERT ...", {}, Exception("terminating connection"))


class FlakyRuns:
    """A repository whose first `failures` calls raise `error`; it keeps what it recorded."""

    def __init__(self, failures: int, error: Exception = DOWN) -> None:
        self.failures, self.error, self.calls = failures, error, 0
        self.recorded: list[Outcome] = []

    def _call(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error

    def record(self, outcomes: list[Outcome]) -> None:
        self._call()
        self.recorded += outcomes

    def claim(self, run: NewRun, worker: str, **_: Any) -> Claim:
        self._call()
        return Claim(run_id=run.id, claimed=True, status=RunStatus.STARTED)


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder, "RETRY_FIRST_WAIT", 0.0)
    monkeypatch.setattr(recorder, "RETRY_WAIT_STEP", 0.0)


def recorder_on(runs: FlakyRuns, seconds: float = 30.0) -> RunRecorder:
    return RunRecorder(runs, retry_seconds=seconds)  # type: ignore[arg-type]


def succeeded() -> Outcome:
    return Outcome(run=RUN, status=RunStatus.SUCCEEDED, output=1)


def test_an_outcome_is_retried_until_the_database_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = FlakyRuns(failures=3)
    with caplog.at_level(logging.WARNING, logger=recorder.__name__):
        recorder_on(runs).record(succeeded())
    assert runs.calls == 4
    assert [o.run.id for o in runs.recorded] == ["r1"]
    assert sum("retry" in r.getMessage() and "r1" in r.getMessage() for r in caplog.records) == 3


def test_a_claim_is_retried_too() -> None:
    runs = FlakyRuns(failures=2)
    claim = recorder_on(runs).claim(RUN, "w1", redelivered=True)
    assert claim.claimed and runs.calls == 3


@pytest.mark.parametrize(
    "write",
    [
        lambda rec: rec.record(succeeded()),
        lambda rec: rec.claim(RUN, "w1"),
    ],
    ids=["record", "claim"],
)
def test_past_the_budget_the_message_is_requeued_not_acked(
    write: Callable[[RunRecorder], object], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr("kombu.utils.functional.time", lambda: next(clock))
    runs = FlakyRuns(failures=10_000)
    with pytest.raises(RecordingUnavailable) as raised:
        write(recorder_on(runs, seconds=25))
    assert isinstance(raised.value, Reject) and raised.value.requeue
    shipped = copy.deepcopy(raised.value)  # rebuilt from its args, as the pool ships it
    assert (shipped.reason, shipped.requeue) == (raised.value.reason, True)
    assert "CONVEYOR_RECORD_RETRY_SECONDS" in str(raised.value.reason)
    assert 2 <= runs.calls <= 5, "the budget (25 s of a clock ticking 10 s a call) bounds it"
    assert runs.recorded == []


def test_a_zero_budget_tries_once() -> None:
    runs = FlakyRuns(failures=1)
    with pytest.raises(RecordingUnavailable):
        recorder_on(runs, seconds=0).record(succeeded())
    assert runs.calls == 1


def test_errors_other_than_a_lost_database_are_not_retried() -> None:
    runs = FlakyRuns(failures=1, error=IntegrityError("INSERT ...", {}, Exception("dup")))
    with pytest.raises(IntegrityError):
        recorder_on(runs).record(succeeded())
    assert runs.calls == 1


def test_the_budget_is_a_validated_setting() -> None:
    base = {"broker_url": FAKE_BROKER, "database_url": FAKE_DATABASE}
    assert load_settings(**base).record_retry_seconds == recorder.DEFAULT_RETRY_SECONDS
    assert load_settings(**base, record_retry_seconds=5).record_retry_seconds == 5
    with pytest.raises(ConfigError, match="CONVEYOR_RECORD_RETRY_SECONDS"):
        load_settings(**base, record_retry_seconds=-1)


def test_redis_connections_fail_fast_and_are_health_checked() -> None:
    settings = load_settings(
        broker_url=FAKE_BROKER, database_url=FAKE_DATABASE, result_backend=FAKE_BROKER
    )
    config = celery_config(settings, Registry())
    options = config["broker_transport_options"]
    assert options["socket_timeout"] == SOCKET_TIMEOUT
    assert options["socket_keepalive"] is True
    assert options["health_check_interval"] > 0
    assert options["visibility_timeout"] == 3600, "the Redis options merge, not replace"
    assert config["redis_backend_health_check_interval"] > 0
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is False


def test_amqp_gets_no_redis_options() -> None:
    config = celery_config(
        load_settings(broker_url=FAKE_AMQP, database_url=FAKE_DATABASE), Registry()
    )
    assert "broker_transport_options" not in config
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert config["control_queue_exclusive"] is False, (
        "an exclusive pidbox queue held by a dead connection locks a reconnecting worker out"
    )


def test_redis_keeps_celerys_control_queue_settings() -> None:
    config = celery_config(
        load_settings(broker_url=FAKE_BROKER, database_url=FAKE_DATABASE), Registry()
    )
    assert "control_queue_exclusive" not in config


def test_the_embedded_unix_socket_gets_no_tcp_options() -> None:
    socket_url = "redis+socket:///tmp/conveyor/redis.socket"
    config = celery_config(
        load_settings(broker_url=socket_url, database_url=FAKE_DATABASE), Registry()
    )
    assert "socket_keepalive" not in config["broker_transport_options"]
    assert "redis_socket_keepalive" not in config


def test_a_submit_to_a_dead_rabbitmq_retries_the_reply_queue_like_a_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery declares the RPC reply queue before each publish retrying forever; conveyor's
    backend bounds it by the publish retry policy (a real RabbitMQ restart is in
    tests/faults/test_service_faults.py)."""
    app = build_app(tmp_path, monkeypatch, broker_url=FAKE_AMQP)
    assert isinstance(app.backend, RPCResults)
    declared: dict[str, Any] = {}
    monkeypatch.setattr(results, "maybe_declare", lambda _queue, **kw: declared.update(kw))
    app.backend.on_task_call(SimpleNamespace(channel=None), "t1")
    assert declared == {"retry": True, **app.conf.task_publish_retry_policy}
    assert declared["max_retries"] is not None
