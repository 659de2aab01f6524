"""SIGTERM mid-task and scale-in during a backlog: a warm shutdown finishes the running task,
or, when the grace runs out first, the task goes back to the queue and runs again."""

from __future__ import annotations

import json

import pytest

from conveyor.metrics.autoscale import LocalAutoscaler
from tests.faults.conftest import MakeEnv
from tests.faults.harness import (
    FaultEnv,
    assert_ledger,
    start_worker,
    started,
    submit_workload,
    wait_final,
    wait_started,
)
from tests.support.waiting import wait_until
from tests.support.workers import ROOT

REDELIVERY = {"visibility_timeout": "5", "time_limit": "4", "soft_time_limit": "3.5"}


def test_sigterm_mid_task_finishes_the_task_within_the_grace(redis_env: FaultEnv) -> None:
    worker = start_worker(redis_env, concurrency=2)
    ids = submit_workload(redis_env, 2, seconds=1.5)
    wait_started(redis_env, ids)
    assert worker.stop(timeout=30) == 0, "a warm shutdown that ended by itself"
    assert wait_final(redis_env, ids, timeout=1) == dict.fromkeys(ids, "succeeded")
    assert assert_ledger(redis_env, ids).reexecuted == []


@pytest.mark.parametrize("broker", ["fault_redis", "fault_amqp"])
def test_a_task_longer_than_the_grace_is_killed_and_handed_back(
    make_env: MakeEnv, broker: str, request: pytest.FixtureRequest
) -> None:
    """The grace (the pod's terminationGracePeriod) ends before the task: the worker is
    killed, the unacknowledged message returns (Redis: after the visibility timeout;
    RabbitMQ: when the connection drops) and the next worker runs it."""
    fenv = make_env(request.getfixturevalue(broker), **REDELIVERY)
    worker = start_worker(fenv, concurrency=1)
    ids = submit_workload(fenv, 1, seconds=2)
    wait_started(fenv, ids)
    assert worker.stop(timeout=0.5) != 0, "the grace ran out: the worker was killed"
    start_worker(fenv, concurrency=1)
    wait_final(fenv, ids, timeout=60)
    assert assert_ledger(fenv, ids).reexecuted == ids


def test_scale_in_during_a_backlog_loses_nothing(
    make_env: MakeEnv, fault_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local autoscaler runs three workers, all mid-task on a backlog, and is forced down
    to one: the two it stops finish their task and exit cleanly, the last one drains."""
    pools = {"default": {"concurrency": 1, "min_replicas": 1, "max_replicas": 3}}
    fenv = make_env(fault_redis, pools=json.dumps(pools))
    for name, value in {**fenv.env, "PYTHONPATH": str(ROOT)}.items():
        monkeypatch.setenv(name, value)
    scaler = LocalAutoscaler(fenv.app, ["default"], log_dir=str(fenv.log_dir))
    try:
        assert scaler.scale_to("default", 3) == "scale-out"
        wait_until(lambda: _ready(fenv) == 3, 90, "three autoscaled workers")
        ids = submit_workload(fenv, 9, seconds=1)
        wait_until(lambda: len(set(started(fenv, ids).values())) == 3, 60, "three busy workers")
        assert scaler.scale_to("default", 1) == "scale-in"
        for proc in scaler.workers["default"].draining:
            assert proc.wait(30) == 0, "a stopped worker exits by itself after its task"
        wait_final(fenv, ids, timeout=60)
        report = assert_ledger(fenv, ids)
    finally:
        scaler.shutdown(grace=10)
    assert report.reexecuted == [], "a warm shutdown lets the running task finish"


def _ready(fenv: FaultEnv) -> int:
    """How many of the deployment's workers answer a ping."""
    return len(fenv.app.control.ping(timeout=0.5) or [])
