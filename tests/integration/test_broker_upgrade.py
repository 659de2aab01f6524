"""Upgrading a Redis deployment from conveyor's earlier key scheme (kombu `sep` ":") strands
nothing: `conveyor broker migrate`, a worker's start, and its sweep during a rolling upgrade
each move what the old scheme left, messages in the unacked hash included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import celery
import pytest
import redis

from conveyor.broker.migrate import migrate_broker
from tests.integration.conftest import service_env
from tests.support.cli import conveyor
from tests.support.plain import (
    CATCH_ALL,
    POOLS,
    PRIORITIES,
    Deployment,
    assert_each_ran_once,
    deployed,
    scraping,
    send_every_priority,
)
from tests.support.services import redis_base, redis_test_db
from tests.support.workers import ROOT

KOMBU_SEP = "\x06\x16"
LEGACY_OPTIONS = {"sep": ":", "priority_steps": list(range(10)), "queue_order_strategy": "priority"}
"""The Redis transport options conveyor's earlier versions gave kombu."""
QUEUES = [*POOLS, CATCH_ALL]


@pytest.fixture(scope="module")
def url(embedded_dir: Path) -> str:
    base, db = redis_base(embedded_dir), redis_test_db() + 7
    found = f"{base}?virtual_host={db}" if base.startswith("redis+socket") else f"{base}/{db}"
    redis.Redis.from_url(found.replace("redis+socket://", "unix://")).flushdb()
    return found


@pytest.fixture(scope="module")
def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.replace("redis+socket://", "unix://"))


@pytest.fixture(scope="module")
def env(url: str, database_url: str) -> dict[str, str]:
    """A visibility timeout just above the longest agent's time limit (the example plugin's
    ingest, 600 s), so kombu looks for abandoned unacked messages every 10 s, and a
    one-second sweep for producers of the earlier version."""
    return {
        **service_env(url, database_url, ""),
        "CONVEYOR_VISIBILITY_TIMEOUT": "700",
        "CONVEYOR_LEGACY_SWEEP_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def conveyor_(env: dict[str, str], log_dir: Path) -> Iterator[Deployment]:
    with deployed(env, log_dir) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def legacy(url: str) -> celery.Celery:
    """A producer of the earlier version: conveyor's old transport options."""
    app = celery.Celery("legacy", broker=url)
    app.conf.broker_transport_options = LEGACY_OPTIONS
    return app


def legacy_keys(raw: redis.Redis) -> list[str]:
    return sorted(
        k.decode() for q in QUEUES for k in raw.scan_iter(f"{q}:*") if k.decode()[-1].isdigit()
    )


def legacy_bindings(raw: redis.Redis) -> list[str]:
    return [
        m.decode()
        for pattern in ("_kombu.binding.*", "_kombu.binding_permanent.*")
        for key in raw.scan_iter(pattern)
        for m in raw.smembers(key)
        if KOMBU_SEP.encode() not in m
    ]


def queued_ids(raw: redis.Redis) -> list[str]:
    """The task ids in every current-scheme list of every queue."""
    keys = [q for q in QUEUES] + [f"{q}{KOMBU_SEP}{step}" for q in QUEUES for step in range(1, 10)]
    return [json.loads(m)["headers"]["id"] for k in keys for m in raw.lrange(k, 0, -1)]


def test_migrate_moves_everything_once_even_from_several_processes_at_once(
    env: dict[str, str], legacy: celery.Celery, raw: redis.Redis
) -> None:
    newer = legacy.send_task("tests.echo.memory", kwargs={"tag": "x"}, queue="memory", priority=3)
    raw.rename("memory:3", f"memory{KOMBU_SEP}3")
    sent = [newer.id]
    for _ in range(8):
        sent += [m.run_id for m in send_every_priority(legacy)]
    in_legacy_lists = 8 * len(QUEUES) * len([p for p in PRIORITIES if p])
    assert len(legacy_keys(raw)) == 15 and legacy_bindings(raw)

    legacy_order = [json.loads(m)["headers"]["id"] for m in raw.lrange("memory:3", 0, -1)]
    dry = conveyor(env, "broker", "migrate", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    found = json.loads(dry.stdout)
    assert sum(found["messages"].values()) == in_legacy_lists
    assert found["bindings"] == len(legacy_bindings(raw)) and found["complete"] is False
    assert legacy_keys(raw), "a dry run moves nothing"

    command = [sys.executable, "-m", "conveyor", "broker", "migrate", "--json"]
    runs = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, [err for _, err in results]
    moved = [json.loads(out)["messages"] for out, _ in results]
    assert sum(sum(m.values()) for m in moved) == in_legacy_lists
    assert legacy_keys(raw) == [] and legacy_bindings(raw) == []
    assert sorted(queued_ids(raw)) == sorted(sent), "every message once, none lost"
    listed = [json.loads(m)["headers"]["id"] for m in raw.lrange(f"memory{KOMBU_SEP}3", 0, -1)]
    assert listed == [newer.id, *legacy_order], (
        "kombu pops from the right: the moved, older messages are taken first, in their order"
    )
    again = json.loads(conveyor(env, "broker", "migrate", "--json").stdout)
    assert (again["messages"], again["bindings"], again["complete"]) == ({}, 0, True)
    raw.flushdb()


def test_a_worker_start_moves_legacy_messages_and_restores_unacked_ones(
    conveyor_: Deployment, legacy: celery.Celery, raw: redis.Redis
) -> None:
    sent = send_every_priority(legacy)
    assert raw.llen("memory:9") == 1 and not raw.exists(f"memory{KOMBU_SEP}9")
    abandoned = uuid.uuid4().hex
    payload = json.loads(raw.rpop("default:5") or b"")
    raw.hset("unacked", abandoned, json.dumps([payload, "", "default"]))
    raw.zadd("unacked_index", {abandoned: time.time() - 3600})
    with scraping(conveyor_.app) as scrape:
        gauges = scrape()
    for queue in QUEUES:
        expected = (4, 1) if queue == "default" else (5, 0)
        found = (
            gauges[("conveyor_queue_ready", queue)],
            gauges[("conveyor_queue_reserved", queue)],
        )
        assert found == expected, (queue, found)

    conveyor_.start_workers()
    assert_each_ran_once(conveyor_.client, sent)
    assert legacy_keys(raw) == [] and legacy_bindings(raw) == []
    assert raw.hlen("unacked") == 0


def test_a_running_worker_moves_what_producers_of_the_earlier_version_still_send(
    conveyor_: Deployment, legacy: celery.Celery, raw: redis.Redis
) -> None:
    client = conveyor_.client
    conveyor_.start_workers()
    sent = {
        legacy.send_task(
            "tests.echo.vector", kwargs={"tag": uuid.uuid4().hex}, queue="vector", priority=p
        ).id
        for p in (3, 6, 9)
    }
    for run_id in sent:
        assert client.wait(run_id, timeout=30).attempts == 1
    assert legacy_keys(raw) == []


def test_the_upgrade_honours_a_global_key_prefix(conveyor_: Deployment, raw: redis.Redis) -> None:
    """Keys under kombu's global_keyprefix are found and moved under it."""
    options = {"global_keyprefix": "gk:"}
    legacy = celery.Celery("legacy", broker=str(conveyor_.app.conf.broker_url))
    legacy.conf.broker_transport_options = {**LEGACY_OPTIONS, **options}
    sent = legacy.send_task("tests.echo.memory", kwargs={"tag": "gk"}, queue="memory", priority=7)
    assert raw.llen("gk:memory:7") == 1
    app = conveyor_.app
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, **options}
    try:
        moved = migrate_broker(app)
    finally:
        app.conf.broker_transport_options = {
            k: v for k, v in app.conf.broker_transport_options.items() if k not in options
        }
    assert moved.messages == {f"memory{KOMBU_SEP}7": 1}
    assert moved.bindings >= 1
    assert not raw.exists("gk:memory:7")
    assert json.loads(raw.lindex(f"gk:memory{KOMBU_SEP}7", 0) or b"")["headers"]["id"] == sent.id
    raw.delete(f"gk:memory{KOMBU_SEP}7")
