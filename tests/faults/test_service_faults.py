"""Broker and database outages mid-run, on private servers the tests may take down.

Each test runs a real worker on its own deployment, submits a workload, waits until runs
are executing, then restarts, kills, stops or blackholes a service, and ends with the
ledger: every run reached exactly one final state and every effect happened once. It also
proves the worker kept consuming afterwards, with a batch submitted after the fault.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from sqlalchemy import text

from conveyor import Client
from conveyor.errors import ServiceUnavailable
from tests.faults.agents import LEDGER
from tests.faults.harness import (
    FINAL,
    FaultEnv,
    LedgerReport,
    assert_ledger,
    make_fault_env,
    release,
    start_worker,
    started,
    submit_workload,
    wait_effects,
    wait_final,
    wait_logged,
)
from tests.faults.servers import (
    MissingServer,
    PostgresServer,
    RabbitServer,
    RedisServer,
    Server,
    blackhole,
    iptables_works,
)
from tests.support.waiting import wait_until

S = TypeVar("S", bound=Server)
FINAL_TIMEOUT = 90.0
REDIS_OUTAGE = 10.0
BLACKHOLE = 8.0
SUBMIT_BOUND = 30.0
"""A submit into a dead network fails within this (socket and connect timeouts times
Celery's publish retries), where TCP alone would wait minutes."""


def _running(server_type: Callable[[Path], S], root: Path) -> Iterator[S]:
    try:
        server = server_type(root)
    except MissingServer as exc:
        pytest.skip(f"{server_type.__name__}: {exc}")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis per test (it starts in a few milliseconds): after a restart, kombu's global
    connection pool still holds the dead connections of the last one, and the first
    control broadcast (the workers' ping) fails on them."""
    yield from _running(RedisServer, tmp_path / "redis")


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    yield from _running(PostgresServer, tmp_path_factory.mktemp("postgres"))


@pytest.fixture(scope="module")
def private_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    yield from _running(RabbitServer, tmp_path_factory.mktemp("rabbitmq"))


def _busy_worker(fenv: FaultEnv, n: int, *, concurrency: int = 2, **workload: Any) -> list[str]:
    """A worker and a workload of n runs, returned once two of them are executing."""
    start_worker(fenv, concurrency=concurrency)
    ids = submit_workload(fenv, n, **workload)
    wait_until(lambda: len(started(fenv, ids)) >= 2, 60, "two runs to start")
    return ids


def _finish(fenv: FaultEnv, ids: list[str]) -> LedgerReport:
    """A batch submitted after the fault runs too; then the ledger of all of them."""
    began = time.monotonic()
    ids += submit_workload(fenv, 3)
    final = wait_final(fenv, ids, FINAL_TIMEOUT)
    assert all(s == "succeeded" for s in final.values()), f"{final}\n{fenv.worker_logs()}"
    report = assert_ledger(fenv, ids)
    print(  # shown with -s: the figures for docs/reliability.md
        f"recovered in {time.monotonic() - began:.1f}s; {len(ids)} runs, "
        f"{len(report.reexecuted)} re-executed, none lost or repeated"
    )
    return report


def test_redis_kill_and_restart_with_aof(
    make_env: Callable[..., FaultEnv], private_redis: RedisServer
) -> None:
    fenv = make_env(private_redis.url)
    ids = _busy_worker(fenv, 10, seconds=0.4)
    private_redis.restart(hard=True)
    _finish(fenv, ids)


def test_redis_down_for_ten_seconds(
    make_env: Callable[..., FaultEnv], private_redis: RedisServer
) -> None:
    fenv = make_env(private_redis.url)
    ids = _busy_worker(fenv, 10, seconds=0.4)
    private_redis.stop()
    down_at = time.monotonic()
    _submit_fails_cleanly(fenv, ids)
    time.sleep(max(0.0, REDIS_OUTAGE - (time.monotonic() - down_at)))
    private_redis.start()
    _finish(fenv, ids)


def _submit_fails_cleanly(fenv: FaultEnv, ids: list[str]) -> None:
    """With the broker down, a submit raises ServiceUnavailable at once and writes no run."""
    began = time.monotonic()
    with Client(fenv.app) as client, pytest.raises(ServiceUnavailable, match="broker"):
        client.submit(LEDGER, {"tag": 99})
    assert time.monotonic() - began < SUBMIT_BOUND, "a submit hung on the dead broker"
    rows = fenv.app.runs.count_by_status(LEDGER)
    assert sum(rows.values()) == len(ids), f"the failed submit left a run row: {rows}"


def _outcome_retried(run_id: str, retry: int) -> str:
    """A worker's log line: recording the outcome of `run_id` failed for the `retry`th time
    and will be retried (a prefork child records its own runs one at a time)."""
    return (
        rf"recording 1 run outcome\(s\), first {re.escape(run_id)} failed \(.*; retry {retry} in "
    )


def _outcome_given_up(run_id: str) -> str:
    """A worker's log line: it gave up recording the outcome of `run_id`."""
    return rf"giving up recording 1 run outcome\(s\), first {re.escape(run_id)} after "


def test_postgres_restart_mid_run(
    private_redis: RedisServer, private_postgres: PostgresServer, fault_logs: Path, tmp_path: Path
) -> None:
    """PostgreSQL goes down while two runs that committed their effect wait to return: they
    go on only once it is down, so their outcomes surely meet the outage, and it comes back
    only once the worker has failed to record each outcome three times (about 0.7 s of
    retrying). The worker rides the outage out: every result lands, and no run is handed back
    and run again."""
    fenv = make_fault_env(private_redis.url, private_postgres.url, fault_logs)
    hold = tmp_path / "postgres-down"
    try:
        ids = _busy_worker(fenv, 8, hold=hold)
        held = list(started(fenv, ids))
        wait_effects(fenv, held)
        private_postgres.stop()
        try:
            release(hold)
            wait_logged(fenv, [_outcome_retried(run_id, 3) for run_id in held])
        finally:  # the next test uses the server too: up again, no dead pooled sessions
            private_postgres.start()
            fenv.engine.dispose()
        report = _finish(fenv, ids)
        assert not report.reexecuted, "the worker handed runs back instead of retrying"
    finally:
        fenv.close()


def test_postgres_down_past_the_retry_budget(
    private_redis: RedisServer, private_postgres: PostgresServer, fault_logs: Path, tmp_path: Path
) -> None:
    """With a 1 s budget and PostgreSQL down for longer, the worker gives up recording and
    hands the messages back unacknowledged: they run again once it is back, effects once. A
    submit meanwhile is published and returns its id; the worker records the run later.

    The two runs that committed their effect go on only once PostgreSQL is down, and it comes
    back only once the worker has given up on both of them."""
    fenv = make_fault_env(
        private_redis.url, private_postgres.url, fault_logs, record_retry_seconds="1"
    )
    hold = tmp_path / "postgres-down"
    try:
        ids = _busy_worker(fenv, 4, hold=hold)
        held = list(started(fenv, ids))
        wait_effects(fenv, held)
        with Client(fenv.app) as client:
            ids.append(client.submit(LEDGER, {"tag": 50}))  # a producer already listening
            private_postgres.stop()
            try:
                ids.append(client.submit(LEDGER, {"tag": 51}))  # published; recorded later
                release(hold)
                wait_logged(fenv, map(_outcome_given_up, held))
            finally:
                private_postgres.start()
                fenv.engine.dispose()
        report = _finish(fenv, ids)
        assert set(held) <= set(report.reexecuted), "the runs given up on did not run again"
    finally:
        fenv.close()


def test_rabbitmq_restart_mid_run(
    make_env: Callable[..., FaultEnv], private_rabbit: RabbitServer
) -> None:
    fenv = make_env(private_rabbit.url)
    ids = _busy_worker(fenv, 10, seconds=0.4)
    private_rabbit.stop()
    _submit_fails_cleanly(fenv, ids)
    private_rabbit.start()
    _finish(fenv, ids)


@pytest.mark.parametrize("broker", ["private_redis", "private_rabbit"])
def test_blackhole_to_the_broker(
    make_env: Callable[..., FaultEnv], broker: str, request: pytest.FixtureRequest
) -> None:
    """Packets to and from the broker vanish for a few seconds while two runs are mid-task
    and a third slot waits for messages; once the network is back the worker carries on."""
    if (why := iptables_works()) is not None:
        pytest.skip(f"no loopback blackhole: {why}")
    server: Server = request.getfixturevalue(broker)
    fenv = make_env(server.url)
    ids = _busy_worker(fenv, 2, concurrency=3, seconds=3.0)
    with blackhole(server.port):
        time.sleep(BLACKHOLE)
    _finish(fenv, ids)


def test_a_submit_into_a_blackhole_fails_fast_and_a_keyed_retry_runs_once(
    make_env: Callable[..., FaultEnv], private_redis: RedisServer
) -> None:
    """A publish that vanishes raises ServiceUnavailable in bounded time instead of waiting
    for TCP to give up. Its message may still arrive once the network is back (the kernel
    retransmits it), so the safe retry carries the same idempotency key: whichever of the
    two runs claims the key first runs, the other is cancelled, and the effect is once."""
    if (why := iptables_works()) is not None:
        pytest.skip(f"no loopback blackhole: {why}")
    fenv = make_env(private_redis.url)
    start_worker(fenv)
    key = f"{fenv.prefix}blackholed"
    with Client(fenv.app) as client:
        client.submit(LEDGER, {"tag": 0})  # a pooled broker connection, as in a live producer
        with blackhole(private_redis.port):
            began = time.monotonic()
            with pytest.raises(ServiceUnavailable, match="broker"):
                client.submit(LEDGER, {"tag": 7}, idempotency_key=key)
            failed_after = time.monotonic() - began
        owner = client.submit(LEDGER, {"tag": 7}, idempotency_key=key)
    assert failed_after < SUBMIT_BOUND, f"the submit took {failed_after:.0f}s to fail"
    wait_until(lambda: _settled(fenv, private_redis), FINAL_TIMEOUT, "every message to run")
    assert_ledger(fenv, [owner])
    with fenv.engine.connect() as conn:
        effects = conn.execute(text("SELECT count(*) FROM fault_ledger WHERE tag = 7")).scalar()
    assert effects == 1
    print(f"failed after {failed_after:.1f}s; runs {fenv.app.runs.count_by_status(LEDGER)}")


def _settled(fenv: FaultEnv, server: RedisServer) -> bool:
    """No message left in the deployment's queues and every run row final."""
    client = redis.Redis(port=server.port)
    try:
        queued = sum(
            int(client.llen(k))
            for k in client.scan_iter(f"{fenv.prefix}*")
            if client.type(k) == b"list"
        )
    finally:
        client.close()
    statuses = fenv.app.runs.count_by_status()
    return queued == 0 and set(statuses) <= FINAL
