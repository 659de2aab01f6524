"""Client.submit_many's bulk path end to end: Celery's own messages pushed to Redis in
pipelines (sent one by one on RabbitMQ), recorded in PostgreSQL in one statement per chunk,
run by real workers exactly as single submits."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from celery.result import AsyncResult
from sqlalchemy.exc import DBAPIError

from conveyor import Client, ConveyorApp, NotMigrated, RunStatus, ServiceUnavailable
from conveyor.broker.bulk import BulkPublisher
from conveyor.models.migrate import upgrade
from conveyor.runs.headers import HEADER_ENQUEUED_AT, HEADER_IDEMPOTENCY_KEY
from conveyor.runs.waiter import Waiter
from tests.integration.conftest import make_app, service_env
from tests.support.certs import serializer_registry_restored, signing_env
from tests.support.services import scratch_database
from tests.support.workers import WorkerProcess

TIMEOUT = 90
SEP = "\x06\x16"


def broker(app: ConveyorApp) -> redis.Redis:
    return redis.Redis.from_url(str(app.conf.broker_url).replace("redis+socket://", "unix://"))


def waiting(app: ConveyorApp, queue: str) -> list[dict[str, Any]]:
    """The messages in a Redis queue and its priority lists, decoded, oldest first."""
    lists = [queue, *(f"{queue}{SEP}{n}" for n in range(1, 10))]
    client = broker(app)
    return [json.loads(raw) for key in lists for raw in reversed(client.lrange(key, 0, -1))]


def purge(app: ConveyorApp, queue: str) -> None:
    broker(app).delete(queue, *(f"{queue}{SEP}{n}" for n in range(1, 10)))


def comparable(envelope: dict[str, Any]) -> dict[str, Any]:
    """An envelope without what differs between two publishes of one message: kombu's random
    delivery tag, and the times (the ETA, the AMQP timestamp conveyor adds)."""
    envelope["properties"].pop("delivery_tag")
    envelope["properties"].pop("timestamp", None)
    envelope["headers"]["eta"] = bool(envelope["headers"]["eta"])
    return envelope


def test_bulk_runs_are_consumed_and_recorded_as_single_submits_are(client: Client) -> None:
    progress: list[int] = []
    ids = client.submit_many(
        "tests.add",
        [{"a": i, "b": 1} for i in range(300)],
        chunk_size=64,
        on_progress=progress.append,
    )
    single = client.submit("tests.add", {"a": 1000, "b": 1})
    assert progress == [64, 64, 64, 64, 44]
    assert len(set(ids)) == 300 and single not in ids
    done = client.wait_many([*ids, single], timeout=TIMEOUT)
    assert [done[i].output for i in ids] == [i + 1 for i in range(300)]
    alike = done[single]
    for i, run_id in enumerate(ids):
        run = done[run_id]
        assert (run.status, run.agent, run.pool, run.queue, run.attempts) == (
            alike.status, alike.agent, alike.pool, alike.queue, alike.attempts,
        )  # fmt: skip
        assert run.input == {"a": i, "b": 1}
        assert run.worker is not None and run.worker.startswith("default.")
        assert run.enqueued_at is not None and run.started_at is not None
        assert run.enqueued_at <= run.started_at <= run.finished_at  # type: ignore[operator]
    assert AsyncResult(ids[7], app=client.app).get(timeout=10) == 8


def test_runs_are_recorded_queued_before_a_worker_sees_them(client: Client) -> None:
    """In a pool no worker of this session consumes: every run is a `queued` row and one
    message, carrying conveyor's headers, when submit_many returns."""
    tag = uuid.uuid4().hex
    queue = f"{client.app.settings.queue_prefix}analytics"
    ids = client.submit_many("tests.echo.analytics", [{"tag": tag}] * 150, chunk_size=64)
    try:
        messages = waiting(client.app, queue)
        assert [m["headers"]["id"] for m in messages] == ids, "one message per run, in order"
        runs = client.runs.get_many(ids)
        assert {r.status for r in runs.values()} == {RunStatus.QUEUED}
        assert {(r.agent, r.queue, r.pool) for r in runs.values()} == {
            ("tests.echo.analytics", queue, "analytics")
        }
        assert all(r.input == {"tag": tag} and r.started_at is None for r in runs.values())
        for message in messages:
            run = runs[message["headers"]["id"]]
            assert run.enqueued_at is not None
            assert message["headers"][HEADER_ENQUEUED_AT] == run.enqueued_at.isoformat()
            assert message["headers"][HEADER_IDEMPOTENCY_KEY] is None
    finally:
        purge(client.app, queue)


@pytest.mark.parametrize(
    ("priority", "countdown", "ignore_result"),
    [(None, None, False), (3, None, True), (None, 30.0, False), (0, 5.0, True)],
)
def test_bulk_messages_are_the_ones_celery_publishes(
    redis_app: ConveyorApp, priority: int | None, countdown: float | None, ignore_result: bool
) -> None:
    """Byte for byte but for the delivery tag and the times, in the same Redis list."""
    queue = f"nobody-{uuid.uuid4().hex}"
    wire = redis_app.broker_priority(priority) if priority is not None else None
    kwargs = [{"x": "é'\n\\", "n": [1, 2.5, {"a": None}], "t": True}, {"i": 2}]
    headers = [{HEADER_ENQUEUED_AT: "2026-12-07T00:00:00+00:00", HEADER_IDEMPOTENCY_KEY: k}
               for k in ("key", None)]  # fmt: skip
    task_ids = [str(uuid.uuid4()) for _ in kwargs]
    for task_id, task_kwargs, task_headers in zip(task_ids, kwargs, headers, strict=True):
        redis_app.send_task(
            "tests.add", kwargs=task_kwargs, task_id=task_id, queue=queue, priority=wire,
            countdown=countdown, ignore_result=ignore_result, headers=dict(task_headers),
        )  # fmt: skip
    with redis_app.producer_or_acquire() as producer:
        publisher = BulkPublisher(
            redis_app, producer, "tests.add", queue=queue, priority=wire, countdown=countdown,
            ignore_result=ignore_result,
        )  # fmt: skip
        assert publisher.batched
        publisher.send(publisher.build(task_ids, kwargs, [dict(h) for h in headers]))
    try:
        key = f"{queue}{SEP}{wire}" if wire else queue
        assert broker(redis_app).keys(f"{queue}*") == [key.encode()]
        messages = waiting(redis_app, queue)
        celery, bulk = messages[:2], messages[2:]
        assert [m["headers"]["id"] for m in messages] == task_ids * 2
        assert [comparable(m) for m in bulk] == [comparable(m) for m in celery]
        assert [m["headers"]["ignore_result"] for m in bulk] == [ignore_result] * 2
        assert all(bool(m["headers"]["eta"]) == bool(countdown) for m in bulk)
    finally:
        purge(redis_app, queue)


def test_idempotency_keys_across_a_batch_run_each_key_once(client: Client) -> None:
    k = uuid.uuid4().hex
    earlier = client.submit("tests.effect", {"key": f"{k}:0"}, idempotency_key=f"{k}:0")
    keys = [f"{k}:0", f"{k}:1", f"{k}:1", None, f"{k}:2", None]
    payloads = [{"key": key or f"{k}:none{i}"} for i, key in enumerate(keys)]
    ids = client.submit_many("tests.effect", payloads, idempotency_keys=keys, chunk_size=2)
    assert ids[0] == earlier, "a key taken before belongs to the earlier run"
    assert ids[2] == ids[1], "a key repeated in the batch (in the next chunk) to its first run"
    assert len({earlier, ids[1], ids[3], ids[4], ids[5]}) == 5
    done = client.wait_many(set(ids), timeout=TIMEOUT)
    assert {r.status for r in done.values()} == {RunStatus.SUCCEEDED}
    assert all(r.output == 1 for r in done.values()), "each effect ran once"
    assert {done[i].idempotency_key for i in ids} == {f"{k}:0", f"{k}:1", f"{k}:2", None}


def test_a_keyed_batch_publishes_one_message_per_key(client: Client) -> None:
    tag = uuid.uuid4().hex
    queue = f"{client.app.settings.queue_prefix}analytics"
    keys = [f"{tag}:a", f"{tag}:b", f"{tag}:a", None, f"{tag}:b"]
    try:
        ids = client.submit_many("tests.echo.analytics", [{"tag": tag}] * 5, idempotency_keys=keys)
        again = client.submit_many(
            "tests.echo.analytics", [{"tag": tag}] * 2, idempotency_keys=keys[:2]
        )
        assert again == ids[:2] and ids[2] == ids[0] and ids[4] == ids[1]
        messages = waiting(client.app, queue)
        assert [m["headers"]["id"] for m in messages] == [ids[0], ids[1], ids[3]]
        assert [m["headers"][HEADER_IDEMPOTENCY_KEY] for m in messages] == [keys[0], keys[1], None]
        runs = client.runs.get_many(ids)
        assert len(runs) == 3 and {r.status for r in runs.values()} == {RunStatus.QUEUED}
    finally:
        purge(client.app, queue)


def test_countdown_holds_every_run_of_the_batch(client: Client) -> None:
    ids = client.submit_many("tests.add", [{"a": i, "b": 0} for i in range(5)], countdown=2)
    done = client.wait_many(ids, timeout=TIMEOUT)
    for run in done.values():
        assert run.status is RunStatus.SUCCEEDED
        assert run.started_at is not None and run.enqueued_at is not None
        assert run.started_at - run.enqueued_at >= timedelta(seconds=1.8)


def test_urgent_batches_leave_the_backlog_first(
    redis_url: str, database_url: str, log_dir: Path
) -> None:
    env = service_env(redis_url, database_url, f"b{uuid.uuid4().hex[:8]}.")
    app = make_app(env)
    with Client(app) as client:
        low = client.submit_many("tests.add", [{"a": i, "b": 0} for i in range(10)], priority=0)
        high = client.submit_many("tests.add", [{"a": i, "b": 1} for i in range(5)], priority=9)
        middle = client.submit_many("tests.add", [{"a": i, "b": 2} for i in range(5)], priority=5)
        worker = WorkerProcess(app, env, "default", log_dir, concurrency=1).wait_ready()
        try:
            runs = client.wait_many([*low, *high, *middle], timeout=TIMEOUT)
        finally:
            worker.stop()
    started = {run_id: run.started_at for run_id, run in runs.items()}
    assert max(started[i] for i in high) < min(started[i] for i in middle)  # type: ignore[type-var]
    assert max(started[i] for i in middle) < min(started[i] for i in low)  # type: ignore[type-var]
    by_start = sorted(low, key=lambda i: started[i])  # type: ignore[arg-type,return-value]
    assert by_start == low, "one priority's runs start in submit order"


# --- when the database fails ---------------------------------------------------------------

REFUSE_QUEUED = """
CREATE FUNCTION refuse_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'queued rows refused by this test'; END $$;
CREATE TRIGGER refuse_queued BEFORE INSERT ON agent_runs
FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION refuse_queued();
"""


@pytest.fixture(scope="module")
def refusing(
    pg_admin: str, redis_url: str, log_dir: Path
) -> Iterator[tuple[ConveyorApp, dict[str, str]]]:
    """An app whose database refuses every `queued` row (workers still record their runs),
    with a default-pool worker."""
    with scratch_database(pg_admin) as url:
        upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(REFUSE_QUEUED)
        env = service_env(redis_url, url, f"r{uuid.uuid4().hex[:8]}.")
        app = make_app(env)
        worker = WorkerProcess(app, env, "default", log_dir).wait_ready()
        try:
            yield app, env
        finally:
            worker.stop()


def test_runs_published_but_not_recorded_are_recorded_by_their_worker(
    refusing: tuple[ConveyorApp, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = refusing
    with Client(app) as client, caplog.at_level(logging.WARNING, "conveyor.runs.repository"):
        ids = client.submit_many("tests.add", [{"a": i, "b": 2} for i in range(200)], chunk_size=64)
        assert "published but not recorded as queued" in caplog.text
        done = client.wait_many(ids, timeout=TIMEOUT)
    assert [done[i].output for i in ids] == [i + 2 for i in range(200)]
    assert all(r.input == {"a": i, "b": 2} for i, r in enumerate(done[i] for i in ids))


def test_a_keyed_batch_the_database_refuses_publishes_nothing(
    refusing: tuple[ConveyorApp, dict[str, str]],
) -> None:
    app, _ = refusing
    queue = f"{app.settings.queue_prefix}analytics"
    with Client(app) as client, pytest.raises(DBAPIError, match="refused by this test"):
        client.submit_many(
            "tests.echo.analytics", [{"tag": "x"}] * 3, idempotency_keys=["a", None, "b"]
        )
    assert waiting(app, queue) == []


def test_a_database_out_of_reach_after_listen_does_not_fail_an_unkeyed_submit(
    refusing: tuple[ConveyorApp, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    """The client's run store is out of reach (its waiter still listens): the runs are
    published, not recorded, and their worker records them."""
    app, env = refusing
    down = make_app(env | {"CONVEYOR_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"})
    with Client(app) as watcher, Client(down) as client:
        client.waiter = Waiter(client.runs, env["CONVEYOR_DATABASE_URL"])
        with caplog.at_level(logging.WARNING, "conveyor.runs.repository"):
            ids = client.submit_many(
                "tests.add", [{"a": i, "b": 3} for i in range(100)], chunk_size=40
            )
        assert "published but not recorded as queued" in caplog.text
        done = watcher.wait_many(ids, timeout=TIMEOUT)
    assert [done[i].output for i in ids] == [i + 3 for i in range(100)]


def test_an_unmigrated_database_fails_before_any_publish(pg_admin: str, redis_url: str) -> None:
    with scratch_database(pg_admin) as url:
        app = make_app(service_env(redis_url, url, f"u{uuid.uuid4().hex[:8]}."))
        queue = f"{app.settings.queue_prefix}analytics"
        with Client(app) as client:
            for keys in (None, ["k", None]):
                with pytest.raises(NotMigrated):
                    client.submit_many(
                        "tests.echo.analytics", [{"tag": "u"}] * 2, idempotency_keys=keys
                    )
        assert waiting(app, queue) == []


def test_an_unreachable_broker_fails_the_submit_and_records_nothing(database_url: str) -> None:
    app = make_app(service_env("redis://127.0.0.1:1/0", database_url, f"d{uuid.uuid4().hex[:8]}."))
    tag = uuid.uuid4().hex
    with Client(app) as client:
        for keys in (None, [tag, None]):
            with pytest.raises(ServiceUnavailable, match="broker unreachable"):
                client.submit_many(
                    "tests.echo.analytics", [{"tag": tag}] * 2, idempotency_keys=keys
                )
        recorded = client.find(agent="tests.echo.analytics", limit=10_000)
    assert all(run.input != {"tag": tag} for run in recorded)


# --- other brokers and signed messages -----------------------------------------------------


@pytest.fixture(scope="module")
def amqp_client(amqp_url: str, database_url: str, log_dir: Path) -> Iterator[Client]:
    env = service_env(amqp_url, database_url, f"q{uuid.uuid4().hex[:8]}.")
    app = make_app(env)
    worker = WorkerProcess(app, env, "default", log_dir).wait_ready()
    try:
        with Client(app) as client:
            yield client
    finally:
        worker.stop()


def test_bulk_submit_over_rabbitmq_is_consumed_and_recorded(amqp_client: Client) -> None:
    progress: list[int] = []
    ids = amqp_client.submit_many(
        "tests.add", [{"a": i, "b": 5} for i in range(120)], chunk_size=50,
        priority=7, on_progress=progress.append,
    )  # fmt: skip
    assert progress == [50, 50, 20]
    done = amqp_client.wait_many(ids, timeout=TIMEOUT)
    assert [done[i].output for i in ids] == [i + 5 for i in range(120)]
    assert {(r.status, r.attempts) for r in done.values()} == {(RunStatus.SUCCEEDED, 1)}


def test_idempotency_keys_over_rabbitmq(amqp_client: Client) -> None:
    k = uuid.uuid4().hex
    keys = [f"{k}:a", None, f"{k}:a", f"{k}:b"]
    payloads = [{"key": f"{k}:{i}"} for i in range(4)]
    ids = amqp_client.submit_many("tests.effect", payloads, idempotency_keys=keys, chunk_size=3)
    assert ids[2] == ids[0] and len(set(ids)) == 3
    done = amqp_client.wait_many(set(ids), timeout=TIMEOUT)
    assert {(r.status, r.output) for r in done.values()} == {(RunStatus.SUCCEEDED, 1)}


def test_signed_bulk_messages_run_on_a_signing_worker(
    redis_url: str, database_url: str, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = service_env(redis_url, database_url, f"g{uuid.uuid4().hex[:8]}.")
    env |= signing_env(tmp_path_factory.mktemp("signing"))
    with serializer_registry_restored():
        app = make_app(env)
        worker = WorkerProcess(app, env, "default", log_dir).wait_ready()
        try:
            with Client(app) as client:
                ids = client.submit_many(
                    "tests.add", [{"a": i, "b": 7} for i in range(40)], chunk_size=16
                )
                done = client.wait_many(ids, timeout=TIMEOUT)
        finally:
            worker.stop()
    assert [done[i].output for i in ids] == [i + 7 for i in range(40)]
    assert {r.worker for r in done.values()} == {worker.node}
