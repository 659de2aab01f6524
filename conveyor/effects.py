"""Exactly-once effects: an agent's database writes committed together with their marker.

Delivery is at least once: a worker killed mid-task has its message redelivered and the agent
body runs again. `effect_once` makes the effect itself happen once. In one transaction on the
run database it inserts the effect's marker, (agent, key), into `run_effects`, calls the
effect with the connection, and keeps the effect's JSON result on the marker; all of it
commits together or not at all. A redelivery finds the marker committed, skips the effect and
gets the kept result. Two deliveries running at the same time serialise on the marker's
unique key, and the second sees the first's outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert

from conveyor.context import current_run
from conveyor.models import jsonb
from conveyor.models.db import engine_for
from conveyor.models.effects import RunEffect

T = TypeVar("T")
MAX_KEY_LENGTH = 512


def _effect_key(key: str | None, run_id: str) -> str:
    if key is None:
        return run_id
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"effect key must be 1..{MAX_KEY_LENGTH} characters, got {len(key)}")
    return jsonb.reject_nul(key)


def _storable(result: Any) -> Any:
    try:
        jsonb.dumps(result)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"effect result must be JSON, kept for redeliveries: {exc}") from None
    return jsonb.storable(result)


def effect_once(effect: Callable[[Connection], T], *, key: str | None = None) -> T:
    """Run `effect(conn)` once per key, committed with its marker; return its result.

    Write the effect through `conn`, which is inside the marker's transaction. `key` names
    the effect within the agent and defaults to the run id, so every run has its effect once;
    a business key ("order-42") makes it once across runs too. An error in `effect` rolls
    both back, so the next delivery does it. On a redelivery `effect` is not called and the
    first result comes back as JSON (a tuple as a list). Only inside an agent.
    """
    run = current_run()
    agent, marker_key = run.agent, _effect_key(key, run.id)
    this = (RunEffect.agent == agent) & (RunEffect.key == marker_key)
    mark = insert(RunEffect).values(agent=agent, key=marker_key, run_id=run.id)
    with engine_for(str(run.settings.database_url)).connect() as conn, conn.begin():
        if conn.execute(mark.on_conflict_do_nothing().returning(RunEffect.run_id)).first() is None:
            earlier = conn.execute(select(RunEffect.result).where(this)).scalar_one_or_none()
            return cast(T, jsonb.restore(earlier))
        result = effect(conn)
        conn.execute(update(RunEffect).where(this).values(result=_storable(result)))
        return result
