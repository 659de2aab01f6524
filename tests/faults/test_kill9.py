"""kill -9 of a worker's pool child, and of the whole worker: no run lost, no effect twice."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from sqlalchemy import text

from tests.faults.conftest import MakeEnv
from tests.faults.harness import (
    FaultEnv,
    assert_ledger,
    children,
    kill,
    release,
    start_worker,
    submit_workload,
    wait_effects,
    wait_final,
    wait_started,
)

SHORT_VISIBILITY = {"visibility_timeout": "4", "time_limit": "3", "soft_time_limit": "2.5"}
"""Redis hands an unacknowledged message back after visibility_timeout: short here, with the
time limits below it as check_config requires."""


@pytest.mark.parametrize("broker", ["fault_redis", "fault_amqp"])
def test_kill9_of_a_child_mid_task_reruns_the_task_and_its_effect_happens_once(
    make_env: MakeEnv, broker: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The worker sees its child die and hands the message back at once (a WorkerLostError
    with reject_on_worker_lost); the killed runs run again, their effect once."""
    fenv = make_env(request.getfixturevalue(broker))
    start_worker(fenv, concurrency=2)
    hold = tmp_path / "effects"
    ids = submit_workload(fenv, 4, hold_before=hold)
    running = wait_started(fenv, ids, count=2)
    kill(running.values())
    release(hold)
    wait_final(fenv, ids, timeout=60)
    report = assert_ledger(fenv, ids)
    assert sorted(report.reexecuted) == sorted(running), "the killed runs ran again"


def test_kill9_after_the_effect_committed_does_not_repeat_the_effect(
    redis_env: FaultEnv, tmp_path: Path
) -> None:
    """The killed runs had committed their effect; their redelivery runs the body again
    (the executions show it) and effect_once keeps the ledger at one row each."""
    start_worker(redis_env, concurrency=2)
    hold = tmp_path / "kill"
    ids = submit_workload(redis_env, 2, hold=hold)
    wait_effects(redis_env, ids)
    kill(wait_started(redis_env, ids).values())
    release(hold)
    wait_final(redis_env, ids, timeout=60)
    report = assert_ledger(redis_env, ids)
    assert sorted(report.reexecuted) == sorted(ids)
    with redis_env.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT run_id, id FROM fault_ledger")).all())
    outputs = {i: r.output for i, r in redis_env.app.runs.get_many(ids).items()}
    assert outputs == rows, "the redelivery returned the row id its first delivery kept"


def _kill_worker_mid_task(fenv: FaultEnv, hold: Path) -> None:
    """Kill -9 a worker's main process while two runs are mid-task, one held before and one
    after its effect; a new worker must finish both, each effect once."""
    worker = start_worker(fenv, concurrency=2)
    pool = [psutil.Process(pid) for pid in children(worker)]
    before = submit_workload(fenv, 1, hold_before=hold)
    after = submit_workload(fenv, 1, hold=hold)
    wait_effects(fenv, after)
    wait_started(fenv, before + after)
    kill([worker.proc.pid])
    worker.proc.wait(10)
    _, alive = psutil.wait_procs(pool, timeout=10)
    assert not alive, "the pool's children exit with their parent"
    release(hold)
    start_worker(fenv, concurrency=2)
    wait_final(fenv, before + after, timeout=60)
    report = assert_ledger(fenv, before + after)
    assert sorted(report.reexecuted) == sorted(before + after)


def test_kill9_of_the_worker_on_redis_redelivers_after_the_visibility_timeout(
    make_env: MakeEnv, fault_redis: str, tmp_path: Path
) -> None:
    _kill_worker_mid_task(make_env(fault_redis, **SHORT_VISIBILITY), tmp_path / "kill")


def test_kill9_of_the_worker_on_rabbitmq_redelivers_when_its_connection_drops(
    make_env: MakeEnv, fault_amqp: str, tmp_path: Path
) -> None:
    _kill_worker_mid_task(make_env(fault_amqp), tmp_path / "kill")
