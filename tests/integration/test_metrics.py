"""Queue state straight from the broker, the exporter's endpoints and `conveyor status`."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from conveyor import Client, ConveyorApp
from conveyor.metrics import Exporter, QueueReader, serve
from tests.integration.conftest import make_app, service_env
from tests.support.cli import conveyor
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

BACKLOG = {0: 7, 5: 4, 9: 3}
"""Messages per priority, left unconsumed in the default pool's queue."""


@pytest.fixture
def env(redis_url: str, database_url: str) -> dict[str, str]:
    return service_env(redis_url, database_url, f"m{uuid.uuid4().hex[:8]}.")


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[ConveyorApp]:
    app = make_app(env)
    yield app
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            if queue.name != "celery":
                queue(conn.default_channel).delete()


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _backlog(client: Client) -> float:
    """Submit BACKLOG to the default pool (no worker reads it); returns when it started."""
    started = time.time()
    for priority, count in BACKLOG.items():
        for i in range(count):
            client.submit("tests.add", {"a": i, "b": priority}, priority=priority)
    return started


def test_redis_backlog_counts_every_priority_and_the_oldest_age(app: ConveyorApp) -> None:
    with Client(app) as client:
        started = _backlog(client)
    prefix = app.settings.queue_prefix
    states = {s.queue: s for s in QueueReader(app).read()}
    default = states[f"{prefix}default"]
    assert (default.ready, default.reserved, default.delayed) == (sum(BACKLOG.values()), 0, 0)
    assert 0 < default.oldest_age_seconds <= time.time() - started + 1
    assert default.pool == "default" and default.reserved_source == "redis"
    assert states[f"{prefix}memory"].ready == 0 and states["celery"].pool == "default"


def test_redis_oldest_age_is_the_oldest_message_of_every_priority_sub_list(
    app: ConveyorApp,
) -> None:
    """Each kombu level's list holds an older and a newer message; the oldest of all sits at
    the tail of a middle level. The age is exact, not a bound."""
    now = time.time()
    queue = f"{app.settings.queue_prefix}default"
    ages = {0: (10.0, 5.0), 3: (50.0, 2.0), 9: (20.0, 1.0)}
    published = sorted(((age, level) for level, pair in ages.items() for age in pair), reverse=True)
    for age, level in published:
        stamp = datetime.fromtimestamp(now - age, UTC).isoformat()
        app.send_task(
            "tests.add",
            kwargs={"a": 1, "b": 2},
            queue=queue,
            priority=level,
            headers={"conveyor_enqueued_at": stamp},
        )
    state = next(s for s in QueueReader(app).read() if s.queue == queue)
    assert state.ready == 6
    assert state.oldest_age_seconds == pytest.approx(time.time() - (now - 50.0), abs=0.5)


def test_exporter_status_and_scale_agree_on_the_backlog(
    app: ConveyorApp, env: dict[str, str]
) -> None:
    with Client(app) as client:
        _backlog(client)
    with serve(Exporter(app, ttl=0), "127.0.0.1", 0) as server:
        base = f"http://127.0.0.1:{server.server_port}"
        status, body = _get(f"{base}/metrics")
        assert status == 200
        samples = _samples(body.decode())
        scaled = json.loads(_get(f"{base}/scale/default")[1])
        health = json.loads(_get(f"{base}/healthz")[1])
        assert _get(f"{base}/scale/nope")[0] == 404
    queue = f"{app.settings.queue_prefix}default"
    labels = frozenset({("queue", queue), ("pool", "default")})
    assert samples[("conveyor_queue_ready", labels)] == sum(BACKLOG.values())
    assert samples[("conveyor_queue_reserved", labels)] == 0
    assert samples[("conveyor_queue_oldest_age_seconds", labels)] > 0
    assert samples[("conveyor_pool_desired_replicas", frozenset({("pool", "default")}))] == 7
    assert scaled["ready"] == 14 and scaled["desired_replicas"] == 7 and scaled["source"] == "redis"
    assert scaled["inputs"]["by_backlog"] == 7 and scaled["inputs"]["concurrency"] == 2
    assert health["broker"] == "ok"

    done = conveyor(env, "status", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    by_queue = {q["queue"]: q for q in shown["queues"]}
    assert by_queue[queue]["ready"] == samples[("conveyor_queue_ready", labels)]
    pools = {p["pool"]: p for p in shown["pools"]}
    assert pools["default"]["desired_replicas"] == scaled["desired_replicas"]


def test_a_running_task_is_reserved_and_a_countdown_is_delayed(
    app: ConveyorApp, env: dict[str, str], log_dir: Path
) -> None:
    worker = WorkerProcess(app, env, "default", log_dir, concurrency=1).wait_ready()
    try:
        with Client(app) as client:
            client.submit("tests.add", {"a": 1, "b": 2}, countdown=600)
            running = client.submit("tests.sleep", {"seconds": 60})
            wait_until(lambda: client.get(running).status.value == "started", 30, "the sleep")
        reader = QueueReader(app, ttl=0)
        queue = f"{app.settings.queue_prefix}default"

        def held() -> bool:
            state = next(s for s in reader.read() if s.queue == queue)
            return (state.ready, state.reserved, state.delayed) == (0, 1, 1)

        wait_until(held, 30, "one reserved and one delayed message")
    finally:
        worker.proc.kill()
        worker.stop()


def test_exporter_counts_tasks_from_events_of_a_prefork_worker(
    app: ConveyorApp, env: dict[str, str], log_dir: Path
) -> None:
    exporter = Exporter(app, ttl=0)
    with serve(exporter, "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        worker = WorkerProcess(app, env, "default", log_dir, kind="prefork").wait_ready()
        try:
            with Client(app) as client:
                ids = [client.submit("tests.add", {"a": i, "b": 1}) for i in range(5)]
                for run_id in ids:
                    client.wait(run_id, timeout=30)
            succeeded = frozenset(
                {("agent", "tests.add"), ("pool", "default"), ("state", "succeeded")}
            )

            def counted() -> dict[Any, float] | None:
                samples = _samples(_get(url)[1].decode())
                return samples if samples.get(("conveyor_tasks_total", succeeded)) == 5 else None

            wait_until(lambda: counted() is not None, 30, "five succeeded tasks in /metrics")
            samples = counted()
            assert samples is not None
            timing = frozenset({("agent", "tests.add"), ("pool", "default")})
            assert samples[("conveyor_task_duration_seconds_count", timing)] == 5
            assert samples[("conveyor_task_queue_wait_seconds_count", timing)] == 5
            assert samples[("conveyor_pool_workers", frozenset({("pool", "default")}))] == 1
            labels = {k for (name, labels) in samples for k, _ in labels if "task" in name}
            assert "hostname" not in labels and "worker" not in labels
        finally:
            worker.stop()


def test_a_configured_token_guards_metrics_and_scale(redis_url: str, database_url: str) -> None:
    env = service_env(redis_url, database_url, f"m{uuid.uuid4().hex[:8]}.")
    token = uuid.uuid4().hex
    app = make_app({**env, "CONVEYOR_EXPORTER_TOKEN": token})
    with serve(Exporter(app, events=False), "127.0.0.1", 0) as server:
        base = f"http://127.0.0.1:{server.server_port}"
        assert _get(f"{base}/metrics")[0] == 401
        assert _get(f"{base}/scale/default", token="wrong-token-xxxxxxxx")[0] == 401
        assert _get(f"{base}/metrics", token=token)[0] == 200
        assert _get(f"{base}/healthz")[0] == 200


MANAGEMENT = "http://guest:guest@127.0.0.1:15672"


@pytest.fixture
def amqp_app(amqp_url: str, database_url: str) -> Iterator[ConveyorApp]:
    env = service_env(amqp_url, database_url, f"m{uuid.uuid4().hex[:8]}.")
    app = make_app({**env, "CONVEYOR_RABBITMQ_MANAGEMENT_URL": MANAGEMENT})
    yield app
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            if queue.name != "celery":
                queue(conn.default_channel).delete()


def test_rabbitmq_ready_by_passive_declare_and_unacked_by_the_management_api(
    amqp_app: ConveyorApp, log_dir: Path
) -> None:
    if _get(f"{MANAGEMENT.replace('guest:guest@', '')}/api/overview")[0] != 401:
        pytest.skip("RabbitMQ management plugin is not enabled (./dev test enables it)")
    with Client(amqp_app) as client:
        _backlog(client)
        client.submit("tests.sleep", {"seconds": 60}, priority=9)
    queue = f"{amqp_app.settings.queue_prefix}default"
    amqp_app.settings = amqp_app.settings.model_copy(update={"rabbitmq_management_url": None})
    passive = next(s for s in QueueReader(amqp_app).read() if s.queue == queue)
    assert (passive.ready, passive.reserved_source) == (15, "amqp-passive-declare")
    amqp_app.settings = amqp_app.settings.model_copy(update={"rabbitmq_management_url": MANAGEMENT})
    reader = QueueReader(amqp_app, ttl=0)

    def state() -> Any:
        return next(s for s in reader.read() if s.queue == queue)

    wait_until(lambda: state().oldest_age_seconds > 0, 30, "the head message's timestamp")
    assert state().ready == 15 and state().reserved_source == "amqp-management-api"
    env = service_env(
        str(amqp_app.settings.broker_url), str(amqp_app.settings.database_url), queue[:-7]
    )
    worker = WorkerProcess(amqp_app, env, "default", log_dir, concurrency=1).wait_ready()
    try:
        wait_until(lambda: state().reserved == 1, 30, "the sleep unacknowledged")
        assert state().ready == 11, "the three priority-9 adds ran first, then the sleep"
    finally:
        worker.proc.kill()
        worker.stop()


def test_rabbitmq_head_age_is_exact_and_countdowns_are_delayed(
    amqp_app: ConveyorApp, log_dir: Path
) -> None:
    """The head message's age from its timestamp (RabbitMQ delivers a priority queue's most
    urgent level first, and reports that level's head, so the messages share one priority);
    runs a worker holds until their ETA are `delayed`, from Celery events, not `reserved`."""
    prefix = amqp_app.settings.queue_prefix
    now = time.time()
    for age in (100, 50, 10):
        amqp_app.send_task(
            "tests.add", kwargs={"a": age, "b": 0}, queue=f"{prefix}analytics",
            timestamp=int(now - age),
            headers={"conveyor_enqueued_at": datetime.fromtimestamp(now - age, UTC).isoformat()},
        )  # fmt: skip
    reader = QueueReader(amqp_app, ttl=0)

    def state(queue: str) -> Any:
        return next(s for s in reader.read() if s.queue == f"{prefix}{queue}")

    wait_until(lambda: state("analytics").oldest_age_seconds > 0, 30, "the head's timestamp")
    expected = time.time() - int(now - 100)
    assert state("analytics").oldest_age_seconds == pytest.approx(expected, abs=1.0)

    env = service_env(
        str(amqp_app.settings.broker_url), str(amqp_app.settings.database_url), prefix
    )
    worker = WorkerProcess(amqp_app, env, "default", log_dir, concurrency=1).wait_ready()
    exporter = Exporter(amqp_app, ttl=0)
    try:
        with serve(exporter, "127.0.0.1", 0) as server, Client(amqp_app) as client:
            assert exporter.events is not None
            events = exporter.events
            wait_until(
                lambda: events.last_event_at is not None,
                60,
                "the exporter's event receiver to hear a worker (events are not kept: one it "
                "missed, it never sees)",
            )
            for _ in range(2):
                client.submit("tests.add", {"a": 1, "b": 2}, countdown=600)
            running = client.submit("tests.sleep", {"seconds": 60})
            wait_until(lambda: client.get(running).status.value == "started", 30, "the sleep")
            labels = frozenset({("queue", f"{prefix}default"), ("pool", "default")})

            def held() -> tuple[float, float, float]:
                body = _get(f"http://127.0.0.1:{server.server_port}/metrics")[1].decode()
                found = _samples(body)
                return tuple(  # type: ignore[return-value]
                    found[(f"conveyor_queue_{n}", labels)] for n in ("ready", "reserved", "delayed")
                )

            wait_until(lambda: held() == (0, 1, 2), 60, "one reserved run and two delayed ones")
    finally:
        worker.proc.kill()
        worker.stop()


def test_a_message_without_the_enqueue_header_is_aged_from_first_sight(app: ConveyorApp) -> None:
    queue = f"{app.settings.queue_prefix}default"
    plain = {
        "body": "e30=",
        "content-type": "application/json",
        "headers": {"id": uuid.uuid4().hex, "task": "tests.add"},
        "properties": {"correlation_id": "x", "delivery_info": {"routing_key": queue}},
    }
    with app.connection_for_write() as conn:
        conn.default_channel.client.lpush(queue, json.dumps(plain))
    reader = QueueReader(app, ttl=0)
    first = next(s for s in reader.read() if s.queue == queue)
    assert (first.ready, first.oldest_age_seconds) == (1, pytest.approx(0, abs=0.5))
    wait_until(
        lambda: next(s for s in reader.read() if s.queue == queue).oldest_age_seconds > 0.2,
        10,
        "the age to grow from first sight",
    )


def test_redis_counts_honour_a_global_key_prefix(app: ConveyorApp) -> None:
    options = dict(app.conf.broker_transport_options)
    app.conf.broker_transport_options = {**options, "global_keyprefix": "gk:"}
    with Client(app) as client:
        _backlog(client)
    queue = f"{app.settings.queue_prefix}default"
    plain = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    assert (plain.exists(queue), plain.exists(f"gk:{queue}")) == (0, 1), "keys carry the prefix"
    state = next(s for s in QueueReader(app).read() if s.queue == queue)
    assert state.ready == sum(BACKLOG.values()) and state.oldest_age_seconds > 0
