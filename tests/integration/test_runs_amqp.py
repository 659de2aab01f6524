"""The same core path on RabbitMQ: routing, recording, plain clients, priorities declared."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import celery
import pytest

from conveyor import Client, ConveyorApp, RunStatus
from tests.integration.conftest import make_app, service_env
from tests.support.workers import WorkerProcess


@pytest.fixture(scope="module")
def amqp_app(amqp_url: str, database_url: str) -> ConveyorApp:
    return make_app(service_env(amqp_url, database_url, f"a{uuid.uuid4().hex[:8]}."))


@pytest.fixture(scope="module")
def amqp_client(amqp_app: ConveyorApp, log_dir: Path) -> Iterator[Client]:
    env = service_env(
        str(amqp_app.settings.broker_url),
        str(amqp_app.settings.database_url),
        amqp_app.settings.queue_prefix,
    )
    workers = [WorkerProcess(amqp_app, env, pool, log_dir) for pool in ("default", "memory")]
    try:
        for w in workers:
            w.wait_ready()
        with Client(amqp_app) as client:
            yield client
    finally:
        for w in workers:
            w.stop()


def test_ping_over_rabbitmq(amqp_client: Client) -> None:
    run = amqp_client.wait(amqp_client.submit("conveyor.ping", {"x": 1}, priority=9), timeout=30)
    assert run.status is RunStatus.SUCCEEDED
    assert run.output["echo"] == {"x": 1}
    assert amqp_client.app.conf.result_backend == "rpc://"


def test_pool_routing_over_rabbitmq(amqp_client: Client) -> None:
    run = amqp_client.wait(amqp_client.submit("tests.where"), timeout=30)
    assert run.output["pool"] == "memory"


def test_plain_client_over_rabbitmq_is_recorded(amqp_url: str, amqp_client: Client) -> None:
    plain = celery.Celery("plain", broker=amqp_url)
    plain.conf.task_queue_max_priority = 10
    sent = plain.send_task("conveyor.ping", kwargs={"plain": "amqp"})
    run = amqp_client.wait(sent.id, timeout=30)
    assert run.status is RunStatus.SUCCEEDED
    assert run.input == {"plain": "amqp"}


def test_retry_over_rabbitmq(amqp_client: Client) -> None:
    key = f"flaky:{uuid.uuid4()}"
    run = amqp_client.wait(
        amqp_client.submit("tests.flaky", {"key": key, "fail_times": 1}), timeout=30
    )
    assert (run.status, run.attempts) == (RunStatus.SUCCEEDED, 2)
