"""Tasks that could outlive the Redis visibility timeout: refused by configuration, or kept
inside it, so Redis never hands a running or waiting task to a second worker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.faults.agents import FLAKY
from tests.faults.conftest import MakeEnv
from tests.faults.harness import (
    FaultEnv,
    assert_ledger,
    executions,
    start_worker,
    submit_workload,
    wait_final,
)
from tests.support.workers import ROOT

WORKER = ["-m", "conveyor", "worker", "--pool", "default"]
CLIENT = ["-c", "from conveyor import Client; Client()"]


def _run(fenv: FaultEnv, argv: list[str], **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**fenv.env, "PYTHONPATH": str(ROOT), **settings}
    return subprocess.run(
        [sys.executable, *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("settings", "who"),
    [
        ({"CONVEYOR_VISIBILITY_TIMEOUT": "5", "CONVEYOR_TIME_LIMIT": "5"}, "5s, default"),
        (
            {
                "CONVEYOR_VISIBILITY_TIMEOUT": "20",
                "CONVEYOR_AGENT_MODULES": "tests.faults.agents,tests.faults.long_agents",
            },
            "30s, agent faults.long",
        ),
    ],
    ids=["default-limit", "agent-limit"],
)
@pytest.mark.parametrize("program", ["worker", "client"])
def test_a_worker_or_client_refuses_a_visibility_timeout_a_task_could_outlive(
    redis_env: FaultEnv, settings: dict[str, str], who: str, program: str
) -> None:
    settings = {"CONVEYOR_SOFT_TIME_LIMIT": "4", "CONVEYOR_TIME_LIMIT": "10", **settings}
    done = _run(redis_env, WORKER if program == "worker" else CLIENT, **settings)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "CONVEYOR_VISIBILITY_TIMEOUT" in output, output
    assert f"largest hard time limit ({who}" in output, output


def test_a_retry_backoff_longer_than_the_visibility_timeout_is_shortened_to_fit(
    make_env: MakeEnv, fault_redis: str
) -> None:
    """faults.flaky's first attempt fails and asks for up to 60 s of backoff; with a 4 s
    visibility timeout the retry waits no longer than fits, so it runs once, soon."""
    fenv = make_env(fault_redis, visibility_timeout="4", time_limit="2", soft_time_limit="1.5")
    start_worker(fenv)
    ids = submit_workload(fenv, 3, agent=FLAKY)
    wait_final(fenv, ids, timeout=30)
    assert_ledger(fenv, ids)
    assert executions(fenv, ids) == dict.fromkeys(ids, 2), "one failed attempt and one retry"
