"""The asyncio pool's guarantees on real workers, on Redis and RabbitMQ: a thousand runs with
mixed outcomes each end right; revoke(terminate=True) cancels one run's coroutine and no
other; a warm shutdown hands the runs still in flight after its grace back to the broker,
and no shutdown (warm or cold, mid-burst) loses a run; kill -9 with a thousand runs in
flight loses none and repeats no effect; a blocking call in async code is reported as a
stall, naming its run; sync agents share the pool's bounded threads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text

from conveyor import Client, ConveyorApp, RunStatus
from conveyor.agents import registry
from conveyor.metrics.events import TaskEvents
from conveyor.workers.aio_pool import BLOCKING_THREADS
from tests.integration.conftest import make_app, service_env
from tests.support.io_agents import LEDGER
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

IN_FLIGHT = 1000
"""Runs in flight in one worker when it is stopped or killed."""
SHORT_VISIBILITY = {
    "CONVEYOR_VISIBILITY_TIMEOUT": "15",
    "CONVEYOR_TIME_LIMIT": "14",
    "CONVEYOR_SOFT_TIME_LIMIT": "13",
}
"""Redis hands a message its worker never acked back after the visibility timeout: short
here (above the time limits, as the app requires), and for the workers only."""
BROKERS = ["redis_url", "amqp_url"]


@dataclass
class Deployment:
    """One queue prefix on one broker: a client app, its workers, and the Redis keys where
    the test agents note what they did (`key`:starts, `key`:holding, `key`:cancelled) and
    where the test holds them (`key`:hold)."""

    app: ConveyorApp
    env: dict[str, str]
    log_dir: Path
    key: str = field(default_factory=lambda: f"aiof-{uuid.uuid4().hex[:8]}")
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def notes(self) -> redis.Redis:
        return redis.Redis.from_url(os.environ["TEST_REDIS_URL"])

    def start(self, **settings: str) -> WorkerProcess:
        """A worker of the `io` pool; `settings` are CONVEYOR_* variables for it alone."""
        worker = WorkerProcess(self.app, {**self.env, **settings}, "io", self.log_dir)
        self.workers.append(worker)
        return worker.wait_ready(timeout=90)

    def count(self, name: str) -> dict[str, int]:
        """Run id -> the count the agents kept in the hash `key`:`name`."""
        return {k.decode(): int(v) for k, v in self.notes.hgetall(f"{self.key}:{name}").items()}

    def hold(self, on: bool) -> None:
        """While held, tests.io_hold runs wait (after their effect) until cancelled."""
        if on:
            self.notes.set(f"{self.key}:hold", 1)
        else:
            self.notes.delete(f"{self.key}:hold")

    def submit_holds(self, n: int) -> list[str]:
        with Client(self.app) as client:
            return client.submit_many("tests.io_hold", [{"key": self.key}] * n)

    def logs(self) -> str:
        return "\n".join(f"--- {w.node}\n{w.output()}" for w in self.workers)


@pytest.fixture(scope="module", autouse=True)
def _io_agents(database_url: str) -> Iterator[None]:
    """The ledger table; afterwards, the io agents leave this process's registry (other
    tests' apps have no `io` pool)."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(LEDGER))
    engine.dispose()
    yield
    for name in [n for n in registry._agents if n.startswith("tests.io_")]:
        registry._agents.pop(name, None)
    sys.modules.pop("tests.support.io_agents", None)


@pytest.fixture
def deploy(
    database_url: str, log_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Deployment]]:
    """deploy(broker_fixture, **worker_settings): a fresh queue prefix on that broker."""
    made: list[Deployment] = []

    def make(broker: str, **worker_settings: str) -> Deployment:
        url = request.getfixturevalue(broker)
        env = service_env(url, database_url, f"aiof{uuid.uuid4().hex[:6]}.")
        env["CONVEYOR_AGENT_MODULES"] = "tests.support.io_agents"
        env["CONVEYOR_LOAD_PLUGINS"] = "false"
        env["CONVEYOR_POOLS"] = json.dumps({"io": {"kind": "asyncio", "concurrency": IN_FLIGHT}})
        if not url.startswith("redis"):
            env["CONVEYOR_RESULT_BACKEND"] = "rpc://"
        made.append(Deployment(make_app(env), {**env, **worker_settings}, log_dir))
        return made[-1]

    yield make
    for deployment in made:
        deployment.hold(False)
        for worker in deployment.workers:
            worker.stop(timeout=5)


def ledger(database_url: str, run_ids: list[str]) -> dict[str, int]:
    """Run id -> its rows in io_ledger: the effects that happened."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    query = text("SELECT run_id, count(*) FROM io_ledger WHERE run_id = ANY(:ids) GROUP BY 1")
    with engine.connect() as conn:
        rows = {r[0]: r[1] for r in conn.execute(query, {"ids": run_ids})}
    engine.dispose()
    return {i: int(rows.get(i, 0)) for i in run_ids}


def statuses(app: ConveyorApp, run_ids: list[str]) -> dict[str, str]:
    runs = app.runs.get_many(run_ids)
    return {i: runs[i].status.value if i in runs else "missing" for i in run_ids}


@pytest.mark.parametrize("broker", BROKERS)
def test_a_thousand_concurrent_runs_with_mixed_outcomes_each_end_right(
    deploy: Callable[..., Deployment], broker: str
) -> None:
    d = deploy(broker)
    d.start()
    modes = ["ok", "transient", "fail", "ok"] * (IN_FLIGHT // 4)
    payloads = [{"seconds": 1.0, "mode": m, "key": f"{d.key}-{i}"} for i, m in enumerate(modes)]
    queue = d.app.agent_queue(d.app.agents.get("tests.io_wait"))
    with Client(d.app) as client:
        ids = client.submit_many("tests.io_wait", payloads)
        bad = [
            d.app.send_task("tests.io_wait", kwargs={"seconds": "soon"}, queue=queue).id
            for _ in range(10)
        ]
        runs = client.wait_many([*ids, *bad], timeout=180)
    for run_id, mode in zip(ids, modes, strict=True):
        run = runs[run_id]
        if mode == "fail":
            assert run.status is RunStatus.FAILED and run.error_type == "ValueError", run
        else:
            assert run.status is RunStatus.SUCCEEDED, (run.error_message, d.logs()[-2000:])
            assert run.output["before"] == run.output["after"] == run_id, "context per run"
            assert run.attempts == (2 if mode == "transient" else 1)
    assert {runs[b].status for b in bad} == {RunStatus.REJECTED}
    assert len({r.worker for r in runs.values() if r.worker}) == 1, "one worker process"


@pytest.mark.parametrize("broker", BROKERS)
def test_terminate_cancels_that_runs_coroutine_and_no_other(
    deploy: Callable[..., Deployment], broker: str
) -> None:
    d = deploy(broker)
    worker = d.start()
    d.hold(True)
    with Client(d.app) as client:
        others = client.submit_many("tests.io_wait", [{"seconds": 3.0}] * 50)
        target = client.submit("tests.io_hold", {"key": d.key})
        wait_until(lambda: target in d.count("holding"), 30, "the run to hold")
        started = time.monotonic()
        client.cancel(target, terminate=True)
        assert client.wait(target, 20).status is RunStatus.CANCELLED
        assert time.monotonic() - started < 10, "cancelled at once, not at the end of its wait"
        runs = client.wait_many(others, 60)
        assert {r.status for r in runs.values()} == {RunStatus.SUCCEEDED}, d.logs()
        assert d.count("cancelled") == {target: 1}, "its coroutine saw the cancellation"
        # Its message was acknowledged: a warm restart hands nothing back to run again.
        assert worker.stop() == 0
        d.start()
        client.wait(client.submit("tests.io_wait", {"seconds": 0.0}), 30)
        time.sleep(1.0)
        run = client.runs.get(target)
    assert d.count("starts") == {target: 1}, "not redelivered"
    assert run is not None and run.status is RunStatus.CANCELLED and run.error_type is None


@pytest.mark.parametrize("broker", BROKERS)
def test_sigterm_hands_the_runs_in_flight_after_the_grace_back_to_the_broker(
    deploy: Callable[..., Deployment], broker: str, database_url: str
) -> None:
    d = deploy(broker)
    worker = d.start(CONVEYOR_SHUTDOWN_GRACE_SECONDS="1")
    d.hold(True)
    ids = d.submit_holds(IN_FLIGHT)
    wait_until(lambda: len(d.count("holding")) == IN_FLIGHT, 60, "every run to hold")
    stopping = time.monotonic()
    assert worker.stop(timeout=60) == 0, "a warm shutdown that ended by itself"
    assert time.monotonic() - stopping < 15, "within the grace and the clean-up"
    assert set(statuses(d.app, ids).values()) == {"started"}, "no run recorded as ended"
    assert len(d.count("cancelled")) == IN_FLIGHT, "each coroutine was cancelled"
    d.hold(False)
    d.start()
    with Client(d.app) as client:
        runs = client.wait_many(ids, 120)
    assert {r.status for r in runs.values()} == {RunStatus.SUCCEEDED}, d.logs()
    assert set(d.count("starts").values()) == {2}, "each ran again, once"
    assert set(ledger(database_url, ids).values()) == {1}, "each effect once"


@pytest.mark.parametrize("broker", BROKERS)
def test_kill9_with_a_thousand_runs_in_flight_runs_each_again_and_its_effect_once(
    deploy: Callable[..., Deployment], broker: str, database_url: str
) -> None:
    d = deploy(broker, **SHORT_VISIBILITY)
    worker = d.start()
    d.hold(True)
    ids = d.submit_holds(IN_FLIGHT)
    wait_until(lambda: set(ledger(database_url, ids).values()) == {1}, 60, "every effect")
    worker.kill()
    d.hold(False)
    d.start()
    with Client(d.app) as client:
        runs = client.wait_many(ids, 120)
    assert {r.status for r in runs.values()} == {RunStatus.SUCCEEDED}, d.logs()
    assert set(d.count("starts").values()) == {2}, "each ran again, once"
    assert set(ledger(database_url, ids).values()) == {1}, "no effect twice"


def test_a_blocking_call_in_async_code_is_reported_as_a_stall_naming_its_run(
    deploy: Callable[..., Deployment],
) -> None:
    d = deploy("redis_url")
    worker = d.start()
    metrics = CollectorRegistry()
    events = TaskEvents(d.app, metrics)
    events.start()
    try:
        wait_until(lambda: events.last_event_at is not None, 30, "the worker's events")
        with Client(d.app) as client:
            blocking = client.submit("tests.io_block", {"seconds": 3.0})
            wait_until(lambda: statuses(d.app, [blocking]) == {blocking: "started"}, 30, "start")
            time.sleep(1.5)
            stats = d.app.control.inspect(destination=[worker.node], timeout=5).stats() or {}
            assert stats[worker.node]["pool"]["loop-lag"] > 1.0, "inspect stats shows the lag"
            run = client.wait(blocking, 30)
            assert run.status is RunStatus.SUCCEEDED
            ended = {"pool": "io"}
            wait_until(
                lambda: (
                    metrics.get_sample_value("conveyor_event_loop_stall_seconds_count", ended)
                    is not None
                ),
                10,
                "the stall's end in the exporter",
            )
    finally:
        events.stop()
    assert metrics.get_sample_value("conveyor_event_loop_stalls_total", ended) == 1
    assert metrics.get_sample_value("conveyor_event_loop_stall_seconds_count", ended) == 1
    assert (metrics.get_sample_value("conveyor_event_loop_stall_seconds_sum", ended) or 0) > 2.5
    noticed = rf"event loop is stalled .*it runs: {run.id} \(tests\.io_block\)"
    assert re.search(noticed, worker.output()), worker.output()


def test_sync_agents_share_the_pools_bounded_threads(deploy: Callable[..., Deployment]) -> None:
    d = deploy("redis_url")
    d.start()
    with Client(d.app) as client:
        payload = {"key": d.key, "seconds": 1.0}
        runs = client.wait_many(client.submit_many("tests.io_sync_sleep", [payload] * 100), 60)
    assert {r.status for r in runs.values()} == {RunStatus.SUCCEEDED}
    assert int(d.notes.get(f"{d.key}:peak") or 0) == BLOCKING_THREADS, "64 at once, no more"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT], ids=["warm", "cold"])
def test_a_shutdown_in_the_middle_of_a_burst_loses_no_run(
    deploy: Callable[..., Deployment], sig: signal.Signals, database_url: str
) -> None:
    """Warm (no grace) or cold (SIGQUIT): runs started, runs given to the pool but not begun
    and messages not yet received all come back to the next worker."""
    d = deploy("redis_url")
    worker = d.start(CONVEYOR_SHUTDOWN_GRACE_SECONDS="0")
    d.hold(True)
    ids = d.submit_holds(IN_FLIGHT)
    wait_until(lambda: len(d.count("starts")) >= 100, 60, "a hundred runs to start")
    worker.proc.send_signal(sig)
    try:
        assert worker.proc.wait(30) == 0, worker.output()
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop in 30s:\n{worker.output()}")
    assert "started" in set(statuses(d.app, ids).values())
    ended = {i: r for i, r in d.app.runs.get_many(ids).items() if r.status.is_final}
    assert not ended, [(r.status, r.error_type, r.error_message) for r in ended.values()]
    d.hold(False)
    d.start()
    with Client(d.app) as client:
        runs = client.wait_many(ids, 60)
    assert {r.status for r in runs.values()} == {RunStatus.SUCCEEDED}, d.logs()
    assert set(d.count("starts").values()) <= {1, 2}
    assert set(ledger(database_url, ids).values()) == {1}, "each effect once"
