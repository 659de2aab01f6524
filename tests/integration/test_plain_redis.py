"""Plain Celery on Redis, as a new user tries it: a `celery.Celery(broker=URL)` app with no
transport options, the `celery` command and upstream Flower (neither able to import
conveyor), against conveyor workers of every pool with no queue prefix, in a Redis db of
this module's own."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import celery
import pytest
import redis
from kombu import Connection, Producer

from conveyor import ConveyorApp
from tests.integration.conftest import service_env
from tests.support.http import free_port, get, get_json
from tests.support.plain import (
    CATCH_ALL,
    POOLS,
    PRIORITIES,
    Deployment,
    assert_each_ran_once,
    assert_run_in_priority_order,
    check_inspect_and_control,
    deployed,
    plain_celery,
    plain_celery_process,
    scraping,
    send_every_priority,
)
from tests.support.services import redis_base, redis_test_db
from tests.support.waiting import wait_until

KOMBU_SEP = "\x06\x16"
FLOWER_AUTH = "ops:plain-flower-pass"


def raw_redis(app: ConveyorApp) -> redis.Redis:
    """A client of the broker's Redis db, without kombu's key prefixing."""
    with app.connection_for_read() as conn:
        return redis.Redis(connection_pool=conn.default_channel.client.connection_pool)


@pytest.fixture(scope="module")
def plain_url(embedded_dir: Path) -> str:
    """A Redis db of this module's own, emptied: its catch-all queue, bindings and pidbox
    are shared by everything in it, and these workers have no queue prefix."""
    base, db = redis_base(embedded_dir), redis_test_db() + 5
    url = f"{base}?virtual_host={db}" if base.startswith("redis+socket") else f"{base}/{db}"
    redis.Redis.from_url(url.replace("redis+socket://", "unix://")).flushdb()
    return url


@pytest.fixture(scope="module")
def conveyor_(plain_url: str, database_url: str, log_dir: Path) -> Iterator[Deployment]:
    with deployed(service_env(plain_url, database_url, ""), log_dir) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def plain(plain_url: str) -> celery.Celery:
    """What a user writes: the broker and result backend URLs, nothing else."""
    return celery.Celery("plain", broker=plain_url, backend=plain_url)


def test_every_priority_is_counted_while_no_worker_runs_then_runs_once(
    conveyor_: Deployment, plain: celery.Celery
) -> None:
    raw = raw_redis(conveyor_.app)
    with scraping(conveyor_.app) as scrape:
        sent = send_every_priority(plain)
        assert raw.llen(f"memory{KOMBU_SEP}9") == 1, "a plain client uses kombu's key scheme"
        first = scrape()
        for queue in [*POOLS, CATCH_ALL]:
            assert first[("conveyor_queue_ready", queue)] == len(PRIORITIES), queue
        began = time.monotonic()
        wait_until(
            lambda: all(
                scrape()[("conveyor_queue_oldest_age_seconds", q)] >= 1.0
                for q in [*POOLS, CATCH_ALL]
            ),
            30,
            "every queue's oldest message to age",
        )
        ages = scrape()
        for queue in [*POOLS, CATCH_ALL]:
            age = ages[("conveyor_queue_oldest_age_seconds", queue)]
            assert 1.0 <= age <= time.monotonic() - began + 1.0, (queue, age)
        conveyor_.start_workers()
        assert_each_ran_once(conveyor_.client, sent)
        assert_run_in_priority_order(conveyor_.client, sent, "analytics", highest=0)
        after = scrape()
        for queue in [*POOLS, CATCH_ALL]:
            assert after[("conveyor_queue_ready", queue)] == 0
            assert after[("conveyor_queue_oldest_age_seconds", queue)] == 0


def test_inspect_and_control_from_a_plain_app(conveyor_: Deployment, plain: celery.Celery) -> None:
    check_inspect_and_control(plain, conveyor_.workers, conveyor_.client)


def test_the_celery_command_line_inspects_and_controls(
    plain_url: str, conveyor_: Deployment, tmp_path: Path
) -> None:
    workers = conveyor_.workers
    nodes = ",".join(w.node for w in workers.values())
    base = ["--broker", plain_url]
    ping = plain_celery(*base, "inspect", "ping", "-j", "-d", nodes, "-t", "10", cwd=tmp_path)
    assert ping.returncode == 0, ping.stderr
    assert json.loads(ping.stdout) == {w.node: {"ok": "pong"} for w in workers.values()}
    registered = plain_celery(
        *base, "inspect", "registered", "-j", "-d", nodes, "-t", "10", cwd=tmp_path
    )
    assert registered.returncode == 0, registered.stderr
    names = {
        node: {t.split(" ")[0] for t in tasks}
        for node, tasks in json.loads(registered.stdout).items()
    }
    assert all(f"tests.echo.{pool}" in names[w.node] for pool, w in workers.items())
    limit = plain_celery(
        *base,
        "control",
        "rate_limit",
        "tests.echo.analytics",
        "30/m",
        "-j",
        "-d",
        nodes,
        cwd=tmp_path,
    )
    assert limit.returncode == 0, limit.stderr
    replies = {node: reply for r in json.loads(limit.stdout) for node, reply in r.items()}
    assert replies == {w.node: {"ok": "new rate limit set successfully"} for w in workers.values()}


def test_bad_binding_entries_and_control_messages_are_warned_once(
    conveyor_: Deployment, plain: celery.Celery
) -> None:
    workers, app = conveyor_.workers, conveyor_.app
    nodes = [w.node for w in workers.values()]
    raw = raw_redis(app)
    raw.sadd("_kombu.binding.reply.celery.pidbox", "no separators at all")
    with Connection(str(app.conf.broker_url)) as conn:
        producer = Producer(conn.default_channel)
        mailbox = plain.control.mailbox
        for _ in range(2):
            fanout = {"exchange": mailbox.exchange, "declare": [mailbox.exchange]}
            producer.publish(["not", "a", "command"], **fanout)
            producer.publish(
                b"\x80\x04junk",
                **fanout,
                content_type="application/x-python-serialize",
                content_encoding="binary",
            )
            unknown = plain.control.broadcast(
                "no_such_command", reply=True, destination=nodes, timeout=10
            )
            assert sorted(next(iter(r.values()))["error"] for r in unknown) == [
                "unknown control command 'no_such_command'"
            ] * len(nodes)
            wrong = plain.control.broadcast(
                "rate_limit", arguments={"bogus": 1}, reply=True, destination=nodes, timeout=10
            )
            assert all("TypeError" in next(iter(r.values()))["error"] for r in wrong), wrong
            replies = plain.control.ping(destination=nodes, timeout=10)
            assert sorted(next(iter(r)) for r in replies) == sorted(nodes)
    for worker in workers.values():
        log = worker.output()
        for warning in (
            "ignoring a malformed binding entry 'no separators at all'",
            "ignoring a control message that is not a command",
            "ignoring a control message that cannot be decoded",
            "ignoring unknown control command 'no_such_command'",
            "control command 'rate_limit' failed",
        ):
            assert log.count(warning) == 1, (worker.node, warning, log[-3000:])
        assert "Control command error" not in log
        assert "dead-lettered" not in log


def test_upstream_flower_shows_conveyor_workers_and_their_tasks(
    plain_url: str, plain: celery.Celery, conveyor_: Deployment, tmp_path: Path
) -> None:
    workers, client = conveyor_.workers, conveyor_.client
    port = free_port()
    flower = plain_celery_process(
        "--broker",
        plain_url,
        "flower",
        f"--port={port}",
        "--address=127.0.0.1",
        f"--basic-auth={FLOWER_AUTH}",
        cwd=tmp_path,
        log=tmp_path / "flower.log",
    )
    api = f"http://127.0.0.1:{port}/api"
    try:

        def all_workers_seen() -> bool:
            if flower.poll() is not None:
                raise RuntimeError((tmp_path / "flower.log").read_text()[-3000:])
            status, body = get(f"{api}/workers?refresh=1", FLOWER_AUTH)
            return status == 200 and all(w.node in json.loads(body) for w in workers.values())

        wait_until(all_workers_seen, 60, "Flower to list every conveyor worker")
        sent = {
            plain.send_task(
                f"tests.echo.{pool}", kwargs={"tag": uuid.uuid4().hex}, queue=pool
            ).id: w
            for pool, w in workers.items()
        }
        for run_id in sent:
            client.wait(run_id, timeout=30)

        def tasks_seen() -> bool:
            tasks = get_json(f"{api}/tasks", FLOWER_AUTH)
            return all(tasks.get(i, {}).get("state") == "SUCCESS" for i in sent)

        wait_until(tasks_seen, 30, "Flower to show each task succeeded")
        tasks = get_json(f"{api}/tasks", FLOWER_AUTH)
        for run_id, worker in sent.items():
            assert tasks[run_id]["worker"] == worker.node
            assert tasks[run_id]["name"] == f"tests.echo.{worker.pool}"
        assert get(f"{api}/workers")[0] == 401, "Flower's own basic auth still applies"
    finally:
        flower.terminate()
        flower.wait(timeout=30)
    assert "BLOCKED IMPORT" not in (tmp_path / "flower.log").read_text()
