"""Any plain Celery client can drive conveyor: by task name, with nothing but the broker URL."""

from __future__ import annotations

import json
import pickle
import uuid

import celery
import pytest
from kombu import Connection, Exchange, Producer

from conveyor import Client, InvalidInput, RunStatus
from tests.support.workers import WorkerProcess


@pytest.fixture
def plain(redis_url: str, client: Client) -> celery.Celery:
    """A Celery app that knows only the broker and result backend URLs: no routes, no tasks."""
    return celery.Celery("plain", broker=redis_url, backend=redis_url)


def test_send_task_by_name_is_recorded(plain: celery.Celery, client: Client) -> None:
    result = plain.send_task("conveyor.ping", kwargs={"plain": True})
    assert result.get(timeout=30)["echo"] == {"plain": True}
    run = client.wait(result.id, timeout=10)
    assert run.status is RunStatus.SUCCEEDED
    assert run.agent == "conveyor.ping"
    assert run.input == {"plain": True}
    assert run.queue == "celery"


def test_task_of_another_pool_sent_to_the_catch_all_queue_runs_on_its_pool(
    plain: celery.Celery, client: Client
) -> None:
    result = plain.send_task("tests.where")
    output = result.get(timeout=30)
    assert output["pool"] == "memory"
    assert output["worker"].startswith("memory.")
    assert client.wait(result.id, timeout=10).queue.endswith("memory")


def test_invalid_payload_is_rejected_with_field_errors_and_never_retried(
    plain: celery.Celery, client: Client
) -> None:
    result = plain.send_task("tests.add", kwargs={"a": 1, "b": "x"})
    with pytest.raises(InvalidInput) as info:
        result.get(timeout=30)
    assert "b" in str(info.value)
    run = client.wait(result.id, timeout=10)
    assert run.status is RunStatus.REJECTED
    assert run.attempts == 1
    assert run.error_type == "InvalidInput"
    assert "b: Input should be a valid integer" in (run.error_message or "")
    assert result.state == "FAILURE"


def test_redelivered_message_does_not_repeat_the_effect(
    plain: celery.Celery, client: Client
) -> None:
    key = f"effect:{uuid.uuid4()}"
    run_id = str(uuid.uuid4())
    first = plain.send_task("tests.effect", kwargs={"key": key}, task_id=run_id)
    assert first.get(timeout=30) == 1
    again = plain.send_task("tests.effect", kwargs={"key": key}, task_id=run_id)
    assert again.get(timeout=30) == 1
    run = client.get(run_id)
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.output == 1


def test_idempotency_key_header_from_a_plain_client(plain: celery.Celery, client: Client) -> None:
    key = f"effect:{uuid.uuid4()}"
    headers = {"conveyor_idempotency_key": key}
    first = plain.send_task("tests.effect", kwargs={"key": key}, headers=headers)
    assert first.get(timeout=30) == 1
    second = plain.send_task("tests.effect", kwargs={"key": key}, headers=headers)
    run = client.wait(second.id, timeout=30)
    assert run.status is RunStatus.CANCELLED
    assert first.id in (run.error_message or "")
    assert client.get(first.id).idempotency_key == key  # type: ignore[union-attr]


def test_pickled_message_is_refused(
    redis_url: str, client: Client, redis_workers: dict[str, WorkerProcess]
) -> None:
    """A pickle message never runs and is never recorded; the worker keeps going."""
    run_id = str(uuid.uuid4())
    # The hostile message a pickle-speaking client would send: a valid Celery protocol-2 body.
    body = pickle.dumps(
        ((), {"pickled": True}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    )
    with Connection(redis_url) as conn:
        Producer(conn).publish(
            body,
            exchange=Exchange(""),
            routing_key="celery",
            serializer=None,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={
                "lang": "py",
                "task": "conveyor.ping",
                "id": run_id,
                "root_id": run_id,
                "parent_id": None,
                "group": None,
                "retries": 0,
                "argsrepr": "()",
                "kwargsrepr": "{}",
                "origin": "test",
            },
        )
    after = client.submit("conveyor.ping", {"after": json.dumps("pickle")})
    assert client.wait(after, timeout=30).status is RunStatus.SUCCEEDED
    assert client.get(run_id) is None
    assert "untrusted content of type pickle" in redis_workers["default"].output()
