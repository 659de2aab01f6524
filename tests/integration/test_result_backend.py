"""The Redis result backend on a real Redis: background STARTED, one-round-trip writes."""

from __future__ import annotations

import uuid

from celery import states

from conveyor import ConveyorApp
from conveyor.results import RedisResults
from tests.support.waiting import wait_until


def _backend(app: ConveyorApp) -> RedisResults:
    backend = app.backend
    assert isinstance(backend, RedisResults)
    return backend


def test_started_is_stored_in_the_background(redis_app: ConveyorApp) -> None:
    backend, task_id = _backend(redis_app), str(uuid.uuid4())
    backend.store_result(task_id, {"pid": 1}, states.STARTED)
    wait_until(
        lambda: backend.get_state(task_id) == states.STARTED, 10, "the STARTED state in Redis"
    )


def test_a_final_state_is_never_overwritten_by_a_late_started(redis_app: ConveyorApp) -> None:
    backend = _backend(redis_app)
    ids = [str(uuid.uuid4()) for _ in range(200)]
    for task_id in ids:
        backend.store_result(task_id, {"pid": 1}, states.STARTED)
        backend.store_result(task_id, {"ok": task_id}, states.SUCCESS)
    assert not backend._started, "every STARTED write was settled by the final one"
    for task_id in ids:
        meta = backend.get_task_meta(task_id, cache=False)
        assert (meta["status"], meta["result"]) == (states.SUCCESS, {"ok": task_id})


def test_a_success_is_kept_when_a_duplicate_reports_failure(redis_app: ConveyorApp) -> None:
    backend, task_id = _backend(redis_app), str(uuid.uuid4())
    backend.store_result(task_id, 5, states.SUCCESS)
    backend.store_result(task_id, ValueError("late duplicate"), states.FAILURE)
    meta = backend.get_task_meta(task_id, cache=False)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, 5)


def test_states_before_success_are_replaced_and_expire(redis_app: ConveyorApp) -> None:
    backend, task_id = _backend(redis_app), str(uuid.uuid4())
    backend.store_result(task_id, None, states.RETRY)
    backend.store_result(task_id, ValueError("no"), states.FAILURE)
    meta = backend.get_task_meta(task_id, cache=False)
    assert meta["status"] == states.FAILURE
    ttl = backend.client.ttl(backend.get_key_for_task(task_id))
    assert 0 < ttl <= redis_app.conf.result_expires


def test_pipelined_writes_load_their_script_again_when_the_server_lost_it(
    redis_app: ConveyorApp,
) -> None:
    """The asyncio pool's writer sends EVALSHA without asking SCRIPT EXISTS first; a Redis
    that restarted or flushed its scripts gets the script again and the batch is written."""
    backend, ids = _backend(redis_app), [str(uuid.uuid4()) for _ in range(3)]
    backend.client.script_flush()
    backend._pipe([backend._encoded(i, {"ok": i}, states.SUCCESS, None, None) for i in ids])
    for task_id in ids:
        meta = backend.get_task_meta(task_id, cache=False)
        assert (meta["status"], meta["result"]) == (states.SUCCESS, {"ok": task_id})
