"""Plain Celery on RabbitMQ against conveyor workers of every pool (no queue prefix), in a
vhost of this module's own. RabbitMQ refuses a queue declared with other arguments than it
has, so a plain client sets Celery's `task_queue_max_priority = 10` to match conveyor's
x-max-priority; one with no setting at all is told which queue and argument differ."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery
import pytest
from kombu import Connection, Consumer, Queue

from conveyor import Client
from tests.integration.conftest import make_app, service_env
from tests.support.cli import conveyor
from tests.support.plain import (
    CATCH_ALL,
    POOLS,
    PRIORITIES,
    Deployment,
    Sent,
    assert_each_ran_once,
    assert_run_in_priority_order,
    check_inspect_and_control,
    deployed,
    scraping,
    send_every_priority,
)
from tests.support.services import RABBITMQ_API, fresh_amqp_vhost, reachable, session_slot
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

MANAGEMENT = "http://guest:guest@127.0.0.1:15672"


@pytest.fixture(scope="module")
def url() -> str:
    if not reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672 and has no embedded fallback")
    return fresh_amqp_vhost(f"conveyor-plain-{session_slot()}")


@pytest.fixture(scope="module")
def conveyor_(url: str, database_url: str, log_dir: Path) -> Iterator[Deployment]:
    env = {**service_env(url, database_url, ""), "CONVEYOR_RABBITMQ_MANAGEMENT_URL": MANAGEMENT}
    with deployed(env, log_dir) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def plain(url: str) -> celery.Celery:
    """A plain app with Celery's own setting for RabbitMQ priorities, and nothing else."""
    app = celery.Celery("plain", broker=url)
    app.conf.task_queue_max_priority = 10
    return app


def queue_arguments(vhost: str) -> dict[str, dict[str, Any]]:
    request = urllib.request.Request(f"{RABBITMQ_API}/queues/{vhost}")
    request.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return {q["name"]: q["arguments"] for q in json.loads(reply.read())}


def test_every_priority_is_counted_while_no_worker_runs_then_runs_once_in_order(
    conveyor_: Deployment, plain: celery.Celery
) -> None:
    declared = conveyor(conveyor_.env, "broker", "migrate", "--json")
    assert declared.returncode == 0 and json.loads(declared.stdout)["complete"], declared.stderr
    sent = send_every_priority(plain)
    with scraping(conveyor_.app) as scrape:
        wait_until(
            lambda: all(
                scrape()[("conveyor_queue_ready", q)] == len(PRIORITIES)
                for q in [*POOLS, CATCH_ALL]
            ),
            10,
            "every message counted (publishes without confirms are routed asynchronously)",
        )
    conveyor_.start_workers()
    assert_each_ran_once(conveyor_.client, sent)
    assert_run_in_priority_order(conveyor_.client, sent, "analytics", highest=9)


def test_a_plain_client_without_the_setting_is_told_which_queue_and_argument_differ(
    url: str, conveyor_: Deployment, tmp_path: Path
) -> None:
    """In a process of its own: kombu's connection pools (and what they remember having
    declared) are shared by every app of a process."""
    script = (
        "import celery, sys\n"
        f"bare = celery.Celery('bare', broker={url!r})\n"
        "bare.send_task('tests.echo.memory', kwargs={'tag': 'refused'}, queue='memory')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("amqp.exceptions.PreconditionFailed")
    assert "inequivalent arg 'x-max-priority' for queue 'memory'" in last


def test_inspect_and_control_over_rabbitmq(conveyor_: Deployment, plain: celery.Celery) -> None:
    check_inspect_and_control(plain, conveyor_.workers, conveyor_.client)


def test_queues_declared_earlier_with_other_arguments_are_declared_anew_with_their_messages(
    database_url: str, log_dir: Path
) -> None:
    vhost = f"conveyor-plain-old-{session_slot()}"
    url = fresh_amqp_vhost(vhost)
    env = service_env(url, database_url, "")
    bare = celery.Celery("bare", broker=url)
    sent = [
        Sent(
            bare.send_task(agent, kwargs={"tag": tag}, queue=queue, priority=p).id,
            queue,
            agent,
            tag,
            p,
        )
        for queue, agent in ((CATCH_ALL, "tests.echo.default"), ("memory", "tests.echo.memory"))
        for p, tag in ((p, f"{queue}-{p}-{uuid.uuid4().hex[:8]}") for p in (1, 5, 9))
    ]

    refused = conveyor(env, "worker", "--pool", "default", timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "conveyor: RabbitMQ queue 'celery' exists with other arguments than conveyor declares "
        f"(inequivalent arg 'x-max-priority' for queue 'celery' in vhost '{vhost}': received "
        "the value '10' of type 'signedint' but current is none); run `conveyor broker "
        "migrate` to declare it anew with its messages kept"
    )
    assert "Traceback" not in refused.stdout + refused.stderr

    dry = json.loads(conveyor(env, "broker", "migrate", "--dry-run", "--json").stdout)
    statuses = {q["queue"]: q["status"] for q in dry["queues"]}
    assert (statuses[CATCH_ALL], statuses["memory"], statuses["vector"]) == ("mismatch",) * 2 + (
        "ok",
    )

    with Connection(url) as conn, Consumer(conn, [Queue("memory", no_declare=True)], callbacks=[]):
        busy = conveyor(env, "broker", "migrate", "--json")
        assert busy.returncode == 1
        report = {q["queue"]: q for q in json.loads(busy.stdout)["queues"]}
        assert (
            report["memory"]["status"] == "busy" and "1 consumer(s)" in report["memory"]["detail"]
        )
        assert (report[CATCH_ALL]["status"], report[CATCH_ALL]["moved"]) == ("redeclared", 3)
    done = conveyor(env, "broker", "migrate", "--json")
    assert done.returncode == 0, done.stderr
    report = {q["queue"]: q for q in json.loads(done.stdout)["queues"]}
    assert (report["memory"]["status"], report["memory"]["moved"]) == ("redeclared", 3)
    arguments = queue_arguments(vhost)
    assert arguments[CATCH_ALL] == arguments["memory"] == {"x-max-priority": 10}
    assert not any(name.endswith(".conveyor-redeclare") for name in arguments)

    app = make_app(env)
    workers = [
        WorkerProcess(app, env, pool, log_dir, concurrency=1) for pool in ("default", "memory")
    ]
    try:
        for worker in workers:
            worker.wait_ready()
        with Client(app) as client:
            assert_each_ran_once(client, sent)
            for queue in (CATCH_ALL, "memory"):
                assert_run_in_priority_order(client, sent, queue, highest=9)
    finally:
        for worker in workers:
            worker.stop()
