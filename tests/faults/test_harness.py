"""The ledger check itself: it fails on a lost run, a repeated effect and a missing one."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import text

from tests.faults.agents import LEDGER
from tests.faults.harness import FaultEnv, assert_ledger

RUN = "INSERT INTO agent_runs (id, agent, pool, status) VALUES (:id, :agent, 'default', :status)"
EFFECT = "INSERT INTO fault_ledger (run_id, tag, pid) VALUES (:id, 0, 0)"
FAULTY = [
    ("started", 0, "'lost': {'RUN': 'started'}"),
    ("succeeded", 2, "'repeated': {'RUN': 2}"),
    ("succeeded", 0, "'no effect': ['RUN']"),
    ("failed", 0, "'wrong state': {'RUN': 'failed'}"),
]


def _run(fenv: FaultEnv, status: str, effects: int) -> str:
    run_id = str(uuid.uuid4())
    with fenv.engine.begin() as conn:
        conn.execute(text(RUN), {"id": run_id, "agent": LEDGER, "status": status})
        for _ in range(effects):
            conn.execute(text(EFFECT), {"id": run_id})
    return run_id


def test_the_ledger_passes_one_final_state_with_one_effect_and_nothing_else(
    redis_env: FaultEnv,
) -> None:
    good = _run(redis_env, "succeeded", 1)
    assert assert_ledger(redis_env, [good]).effects == {good: 1}
    for status, effects, problem in FAULTY:
        run_id = _run(redis_env, status, effects)
        with pytest.raises(AssertionError, match=re.escape(problem.replace("RUN", run_id))):
            assert_ledger(redis_env, [good, run_id])
