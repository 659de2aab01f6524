"""effect_once edges that mutation testing found unguarded (issue 17, benchmarks/mutation.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.effects import MAX_KEY_LENGTH
from tests.faults.harness import FaultEnv, make_fault_env
from tests.faults.test_effect_once import deliver, ledger_rows
from tests.support.services import PG_ADMIN, scratch_database


@pytest.fixture(scope="module")
def effect_env(fault_redis: str, fault_logs: Path) -> Iterator[FaultEnv]:
    with scratch_database(PG_ADMIN, prefix="conveyor_fault") as url:
        yield make_fault_env(fault_redis, url, fault_logs)


def test_a_key_of_exactly_the_limit_is_a_key_like_any_other(effect_env: FaultEnv) -> None:
    """MAX_KEY_LENGTH characters is allowed (one more is refused, in test_effect_once.py):
    it is stored and makes the effect once across runs. Kills `len(key) >= MAX_KEY_LENGTH`."""
    key = uuid.uuid4().hex + "k" * (MAX_KEY_LENGTH - 32)
    assert len(key) == MAX_KEY_LENGTH
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    skipped, result = deliver(effect_env, first, key)
    assert skipped is False
    assert deliver(effect_env, second, key) == (True, result)
    assert ledger_rows(effect_env, first, second) == 1
