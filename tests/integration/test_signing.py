"""Message signing end to end: a worker with CONVEYOR_SIGNING_* runs signed messages only.

Unsigned JSON, a signed message whose body was altered afterwards, and one signed by a key
outside the cert store are all refused before any agent code runs: dead-lettered once,
rejected without requeue, and the worker keeps serving.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.utils.serialization import b64decode, b64encode
from kombu.serialization import dumps

from conveyor import Client, ConveyorApp, RunStatus
from conveyor.dlq import DeadLetterReason
from tests.integration.conftest import make_app, service_env
from tests.support.certs import serializer_registry_restored, signing_env
from tests.support.messages import publish_raw, task_message
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

TIMEOUT = 60
KEY_PREFIX, TAMPERED_PREFIX = "signing:", "tampered"


@pytest.fixture(scope="module")
def signed(
    redis_url: str, database_url: str, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ConveyorApp, WorkerProcess]]:
    """An app and a default-pool worker that both sign with a fresh key."""
    env = service_env(redis_url, database_url, f"s{uuid.uuid4().hex[:8]}.")
    env |= signing_env(tmp_path_factory.mktemp("signing"))
    with serializer_registry_restored():
        app = make_app(env)
        worker = WorkerProcess(app, env, "default", log_dir)
        try:
            yield app, worker.wait_ready()
        finally:
            worker.stop()


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url.replace("redis+socket://", "unix://"))
    yield client
    client.close()


def send_effect(
    app: ConveyorApp, serializer: str, alter: Callable[[bytes], bytes] = bytes
) -> tuple[str, str]:
    """Publish a raw tests.effect call (it counts its executions under a fresh key) with
    kombu's `serializer`, its body passed through `alter`; return the key and the run id."""
    key = f"{KEY_PREFIX}{uuid.uuid4()}"
    run_id, headers, body = task_message(app, "tests.effect", key=key)
    content_type, encoding, data = dumps(body, serializer=serializer)
    raw = data if isinstance(data, bytes) else data.encode()
    publish_raw(app, alter(raw), headers, content_type, content_encoding=encoding)
    return key, run_id


def tamper(signed: bytes) -> bytes:
    """The signed message with its JSON body altered: the effect's key is renamed."""
    altered = b64decode(signed).replace(KEY_PREFIX.encode(), TAMPERED_PREFIX.encode())
    assert altered != b64decode(signed)
    return b64encode(altered)


def await_refusal(app: ConveyorApp, run_id: str) -> str:
    """Wait until the worker dead-lettered `run_id`; return the recorded detail."""

    def entries() -> list[str]:
        found = app.dead_letters.find(pool="default", limit=500, replayed=True)
        return [e.detail for e in found if e.run_id == run_id and e.reason is reason]

    reason = DeadLetterReason.NOT_JSON
    wait_until(lambda: bool(entries()), TIMEOUT, f"the worker to refuse {run_id}")
    [detail] = entries()
    return detail


def assert_serving(app: ConveyorApp, worker: WorkerProcess) -> None:
    """Still up, and a signed run submitted after the refused message succeeds on it."""
    assert worker.proc.poll() is None, worker.output()
    with Client(app) as client:
        run = client.wait(client.submit("tests.add", {"a": 20, "b": 22}), timeout=TIMEOUT)
    assert (run.status, run.output, run.worker) == (RunStatus.SUCCEEDED, 42, worker.node)


def test_a_signed_run_succeeds(signed: tuple[ConveyorApp, WorkerProcess]) -> None:
    app, worker = signed
    with Client(app) as client:
        run = client.wait(client.submit("tests.add", {"a": 2, "b": 3}), timeout=TIMEOUT)
    assert (run.status, run.output, run.worker) == (RunStatus.SUCCEEDED, 5, worker.node)


def test_a_raw_signed_message_runs(
    signed: tuple[ConveyorApp, WorkerProcess], broker: redis.Redis
) -> None:
    """The control for the refusals below: the same raw publish, signed and intact, runs."""
    app, _ = signed
    key, run_id = send_effect(app, "auth")
    run = Client(app).wait(run_id, timeout=TIMEOUT)
    assert run.status is RunStatus.SUCCEEDED
    assert int(broker.get(key) or 0) == 1


def assert_refused(
    signed: tuple[ConveyorApp, WorkerProcess], broker: redis.Redis, sent: tuple[str, str]
) -> str:
    """Dead-lettered once, never run, not left unacked, and the worker still serves;
    returns the recorded reason."""
    app, worker = signed
    key, run_id = sent
    detail = await_refusal(app, run_id)
    assert_serving(app, worker)
    assert broker.get(key) is None
    assert broker.get(key.replace(KEY_PREFIX, TAMPERED_PREFIX)) is None
    assert Client(app).get(run_id) is None
    assert not any(run_id.encode() in v for v in broker.hvals("unacked"))
    return detail


def test_an_unsigned_json_message_is_refused(
    signed: tuple[ConveyorApp, WorkerProcess], broker: redis.Redis
) -> None:
    sent = send_effect(signed[0], "json")
    assert "application/json" in assert_refused(signed, broker, sent)


def test_a_tampered_signed_message_is_refused(
    signed: tuple[ConveyorApp, WorkerProcess], broker: redis.Redis
) -> None:
    sent = send_effect(signed[0], "auth", tamper)
    assert "Unable to deserialize" in assert_refused(signed, broker, sent)


def test_a_message_signed_by_an_untrusted_key_is_refused(
    signed: tuple[ConveyorApp, WorkerProcess],
    broker: redis.Redis,
    tmp_path: Path,
    redis_url: str,
    database_url: str,
) -> None:
    app = signed[0]
    with serializer_registry_restored():
        intruder = service_env(redis_url, database_url, app.settings.queue_prefix)
        make_app(intruder | signing_env(tmp_path))
        sent = send_effect(app, "auth")
    assert "Unknown certificate" in assert_refused(signed, broker, sent)


def test_a_plain_celery_client_configured_the_same_way_is_accepted(
    signed: tuple[ConveyorApp, WorkerProcess], broker: redis.Redis
) -> None:
    """The recipe of docs/security.md for a producer that does not use conveyor."""
    app, worker = signed
    key = f"{KEY_PREFIX}{uuid.uuid4()}"
    security = {k: v for k, v in app.conf.items() if k.startswith("security_")}
    plain = Celery("plain", broker=app.conf.broker_url, set_as_current=False)
    plain.conf.update(
        task_serializer="auth",
        event_serializer="auth",
        accept_content=["auth"],
        **security,
    )
    with serializer_registry_restored():
        plain.setup_security()
        result = plain.send_task(
            "tests.effect",
            kwargs={"key": key},
            queue=app.agent_queue(app.agents.get("tests.effect")),
        )
    run = Client(app).wait(result.id, timeout=TIMEOUT)
    assert (run.status, run.worker) == (RunStatus.SUCCEEDED, worker.node)
    assert int(broker.get(key) or 0) == 1
