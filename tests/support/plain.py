"""Plain Celery clients against conveyor workers: a backlog at every priority on every pool
queue, workers of every pool, and the exporter's reading of them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celery
import redis

from conveyor import Client, ConveyorApp, RunStatus, create_app, load_settings
from conveyor.metrics.exporter import Exporter
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, WorkerProcess

POOLS = ("default", "memory", "vector", "analytics")
CATCH_ALL = "celery"
PRIORITIES: tuple[int | None, ...] = (0, 3, 5, 9, None)
WITHOUT_CONVEYOR = ROOT / "tests" / "support" / "celery_without_conveyor.py"


@dataclass(frozen=True)
class Sent:
    run_id: str
    queue: str
    agent: str
    tag: str
    priority: int | None


def send_every_priority(plain: celery.Celery) -> list[Sent]:
    """One message per priority (and one with none) to each pool's queue, by its pool's echo
    agent, and to the catch-all queue, by the default pool's."""
    targets = [(pool, f"tests.echo.{pool}") for pool in POOLS]
    targets.append((CATCH_ALL, "tests.echo.default"))
    sent = []
    for queue, agent in targets:
        for priority in PRIORITIES:
            tag = f"{queue}-{priority}-{uuid.uuid4().hex[:8]}"
            options: dict[str, Any] = {} if priority is None else {"priority": priority}
            result = plain.send_task(agent, kwargs={"tag": tag}, queue=queue, **options)
            sent.append(Sent(result.id, queue, agent, tag, priority))
    return sent


def assert_each_ran_once(client: Client, sent: list[Sent], timeout: float = 60) -> None:
    """Every message became one succeeded run on its queue, executed once."""
    for message in sent:
        run = client.wait(message.run_id, timeout=timeout)
        assert run.status is RunStatus.SUCCEEDED, (message, run.error_message)
        assert (run.agent, run.queue, run.attempts) == (message.agent, message.queue, 1), message
        assert run.output == {
            "tag": message.tag,
            "pool": message.agent.rsplit(".", 1)[1],
            "executions": 1,
        }
    counters = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    counts = counters.mget([f"echo:{m.tag}" for m in sent])
    assert counts == [b"1"] * len(sent), "each message executed exactly once"


Gauges = dict[tuple[str, str], float]


@contextmanager
def scraping(app: ConveyorApp) -> Iterator[Callable[[], Gauges]]:
    """scrape(): the exporter's queue gauges by (metric, queue), as its /metrics serves
    them; one exporter throughout, so ages of unstamped messages count from its first look."""
    exporter = Exporter(app, events=False, ttl=0)

    def scrape() -> Gauges:
        body = b"".join(
            exporter({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}, lambda *a: None)
        ).decode()
        found = {}
        for line in body.splitlines():
            if line.startswith("conveyor_queue_") and 'queue="' in line:
                name, rest = line.split("{", 1)
                queue = rest.split('queue="', 1)[1].split('"', 1)[0]
                found[(name, queue)] = float(line.rsplit(" ", 1)[1])
        return found

    try:
        yield scrape
    finally:
        exporter.close()


class Deployment:
    """conveyor on one broker with no queue prefix, as a plain client finds it: its
    environment, app and client, and workers of every pool, started on first use."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.app = create_app(
            load_settings(**{k.removeprefix("CONVEYOR_").lower(): v for k, v in env.items()})
        )
        self.client = Client(self.app)
        self._workers: dict[str, WorkerProcess] = {}

    @property
    def workers(self) -> dict[str, WorkerProcess]:
        return self.start_workers()

    def start_workers(self) -> dict[str, WorkerProcess]:
        """A worker of every pool, started and awaited unless it already runs."""
        if not self._workers:
            self._workers = {p: WorkerProcess(self.app, self.env, p, self.log_dir) for p in POOLS}
            for worker in self._workers.values():
                worker.wait_ready()
        return self._workers

    def close(self) -> None:
        for worker in self._workers.values():
            worker.stop()
        self.client.close()


@contextmanager
def deployed(env: dict[str, str], log_dir: Path) -> Iterator[Deployment]:
    deployment = Deployment(env, log_dir)
    try:
        yield deployment
    finally:
        deployment.close()


def plain_celery(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The `celery` command line, run where conveyor cannot be imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "FLOWER_"))}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, str(WITHOUT_CONVEYOR), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "BLOCKED IMPORT" not in done.stderr, done.stderr
    return done


def plain_celery_process(*args: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """A long-running `celery` command (Flower, say) where conveyor cannot be imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "FLOWER_"))}
    env.pop("PYTHONPATH", None)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, str(WITHOUT_CONVEYOR), *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def check_inspect_and_control(
    plain: celery.Celery, workers: dict[str, WorkerProcess], client: Client
) -> None:
    """inspect ping/registered/active/reserved/stats, control revoke and rate_limit, from a
    plain app: every worker answers, and what it answers is true."""
    nodes = {pool: w.node for pool, w in workers.items()}
    inspect = plain.control.inspect(destination=list(nodes.values()), timeout=10)
    assert inspect.ping() == {node: {"ok": "pong"} for node in nodes.values()}
    registered = inspect.registered() or {}
    for pool, node in nodes.items():
        assert f"tests.echo.{pool}" in registered[node], (node, registered.get(node))
    stats = inspect.stats() or {}
    for pool, node in nodes.items():
        concurrency = client.app.settings.pool(pool).concurrency
        assert stats[node]["pool"]["max-concurrency"] == concurrency, stats[node]["pool"]

    key = f"plain-active-{uuid.uuid4().hex[:8]}"
    running = plain.send_task("tests.sleep", kwargs={"seconds": 3, "key": key}, queue="default")
    counters = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    wait_until(lambda: counters.exists(key) == 1, 30, "the sleep to start")
    active = inspect.active() or {}
    assert [t["id"] for t in active[nodes["default"]]] == [running.id]
    assert all(active[node] == [] for pool, node in nodes.items() if pool != "default")
    reserved = inspect.reserved() or {}
    assert set(reserved) == set(nodes.values())
    assert all(isinstance(tasks, list) for tasks in reserved.values())

    revoked_id = str(uuid.uuid4())
    replies = plain.control.revoke(revoked_id, reply=True, destination=list(nodes.values()))
    assert len(replies) == len(nodes)
    assert all("revoked" in next(iter(r.values()))["ok"] for r in replies), replies
    tag = f"revoked-{uuid.uuid4().hex[:8]}"
    plain.send_task("tests.echo.memory", kwargs={"tag": tag}, queue="memory", task_id=revoked_id)
    assert client.wait(revoked_id, timeout=30).status is RunStatus.CANCELLED
    assert counters.get(f"echo:{tag}") is None, "a revoked run never executes"

    replies = plain.control.rate_limit(
        "tests.echo.vector", "120/m", reply=True, destination=list(nodes.values())
    )
    assert [next(iter(r.values())) for r in replies] == [
        {"ok": "new rate limit set successfully"}
    ] * len(nodes)
    items = inspect.registered("rate_limit") or {}
    assert "tests.echo.vector [rate_limit=120/m]" in items[nodes["vector"]]
    client.wait(running.id, timeout=30)


def assert_run_in_priority_order(
    client: Client, sent: list[Sent], queue: str, *, highest: int
) -> None:
    """On a queue that one single-slot worker drained, the runs started most urgent first:
    on Redis kombu takes priority 0 first, on RabbitMQ 9 (no priority counts as 0)."""
    runs = sorted(
        (client.wait(m.run_id, timeout=30).started_at, m.priority or 0)
        for m in sent
        if m.queue == queue
    )
    priorities = [priority for _, priority in runs]
    assert priorities == sorted(priorities, key=lambda p: abs(p - highest)), (queue, priorities)
