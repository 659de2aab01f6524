"""End to end on the Redis broker: runs are executed by real workers and recorded in PostgreSQL."""

from __future__ import annotations

import json
import os
import uuid

import pytest
import redis
from celery.result import AsyncResult

from conveyor import Client, ConveyorApp, InvalidInput, RunStatus, UnknownAgent
from conveyor.metrics.queues import QueueReader


def test_ping_round_trip_is_recorded(client: Client) -> None:
    run_id = client.submit("conveyor.ping", {"x": 1})
    run = client.wait(run_id, timeout=30)
    assert run.status is RunStatus.SUCCEEDED
    assert run.output["echo"] == {"x": 1}
    assert run.output["pool"] == "default"
    assert run.output["hostname"].startswith("default.")
    assert run.worker == run.output["hostname"]
    assert run.attempts == 1
    assert run.queue == client.app.agent_queue(client.app.agents.get("conveyor.ping"))
    assert run.enqueued_at <= run.started_at <= run.finished_at


def test_result_is_readable_from_celery_too(client: Client) -> None:
    run_id = client.submit("tests.add", {"a": 2, "b": 3})
    assert client.result(run_id, timeout=30) == 5
    result = AsyncResult(run_id, app=client.app)
    assert result.get(timeout=10) == 5
    del result  # unsubscribes now, not during interpreter shutdown


def test_agent_runs_on_its_own_pool(client: Client) -> None:
    run = client.wait(client.submit("tests.where"), timeout=30)
    assert run.status is RunStatus.SUCCEEDED
    assert run.output["pool"] == "memory"
    assert run.output["worker"].startswith("memory.")
    assert run.queue.endswith("memory")


def test_output_model_is_dumped_to_json(client: Client) -> None:
    assert client.result(client.submit("tests.double", {"value": 4}), timeout=30) == {"value": 8}


def test_unknown_agent_is_refused_at_submit_with_close_matches(client: Client) -> None:
    with pytest.raises(UnknownAgent, match=r"conveyor\.ping"):
        client.submit("conveyor.pnig", {})


def test_a_payload_too_large_for_workers_is_refused_at_submit(client: Client) -> None:
    limit = client.app.settings.max_message_bytes
    before = client.runs.count_by_status(agent="conveyor.ping")
    with pytest.raises(InvalidInput, match=f"over {limit} bytes.*CONVEYOR_MAX_MESSAGE_BYTES"):
        client.submit("conveyor.ping", {"x": "a" * limit})
    assert client.runs.count_by_status(agent="conveyor.ping") == before
    assert client.result(client.submit("conveyor.ping", {"x": "a" * 1000}), timeout=30)


def test_invalid_payload_is_refused_at_submit_and_nothing_is_written(client: Client) -> None:
    before = client.runs.count_by_status(agent="tests.add")
    with pytest.raises(InvalidInput, match="b"):
        client.submit("tests.add", {"a": 1, "b": "not a number"})
    assert client.runs.count_by_status(agent="tests.add") == before


def test_transient_errors_are_retried_until_success(client: Client) -> None:
    key = f"flaky:{uuid.uuid4()}"
    run = client.wait(client.submit("tests.flaky", {"key": key, "fail_times": 2}), timeout=60)
    assert run.status is RunStatus.SUCCEEDED
    assert run.output == 3
    assert run.attempts == 3


def test_retries_run_out_and_the_run_fails(client: Client) -> None:
    key = f"flaky:{uuid.uuid4()}"
    run = client.wait(client.submit("tests.flaky", {"key": key, "fail_times": 10}), timeout=60)
    assert run.status is RunStatus.FAILED
    assert run.attempts == 4
    assert run.error_type == "TransientError"


def test_non_transient_error_fails_at_once(client: Client) -> None:
    run = client.wait(client.submit("tests.boom", {"message": "bad thing"}), timeout=30)
    assert run.status is RunStatus.FAILED
    assert run.attempts == 1
    assert run.error_type == "ValueError"
    assert run.error_message == "bad thing"
    assert "ValueError: bad thing" in (run.error_traceback or "")


def test_idempotency_key_returns_the_first_run_and_runs_once(client: Client) -> None:
    key = f"effect:{uuid.uuid4()}"
    first = client.submit("tests.effect", {"key": key}, idempotency_key=key)
    second = client.submit("tests.effect", {"key": key}, idempotency_key=key)
    assert second == first
    assert client.result(first, timeout=30) == 1
    third = client.submit("tests.effect", {"key": key}, idempotency_key=key)
    assert third == first


def test_a_duplicate_submit_publishes_one_message_and_records_it_queued(client: Client) -> None:
    """Counted on the broker, in a pool no worker of this session consumes; the run is
    recorded `queued` at submit, before any worker has seen it."""
    key = f"dup:{uuid.uuid4()}"
    tag = uuid.uuid4().hex
    queue = f"{client.app.settings.queue_prefix}analytics"
    ids = {
        client.submit("tests.echo.analytics", {"tag": tag}, idempotency_key=key) for _ in range(3)
    }
    ids |= set(
        client.submit_many("tests.echo.analytics", [{"tag": tag}] * 2, idempotency_keys=[key, key])
    )
    unkeyed = client.submit("tests.echo.analytics", {"tag": tag})
    try:
        assert len(ids) == 1
        waiting = {s.queue: s.ready for s in QueueReader(client.app).read()}
        assert waiting[queue] == 2, "one message per run: the keyed one and the unkeyed one"
        for run_id in (*ids, unkeyed):
            run = client.get(run_id)
            assert run is not None and run.status is RunStatus.QUEUED
            assert (run.agent, run.queue, run.input) == (
                "tests.echo.analytics",
                queue,
                {"tag": tag},
            )
            assert run.enqueued_at is not None and run.started_at is None
    finally:
        with client.app.connection_for_write() as conn:
            client.app.amqp.queues[queue](conn.default_channel).purge()


def test_async_agents_share_one_loop_per_worker_process(client: Client) -> None:
    ids = [client.submit("tests.async_info", {"delay": 0}) for _ in range(6)]
    outputs = [r.output for r in client.wait_many(ids, timeout=30).values()]
    loops_per_pid: dict[int, set[int]] = {}
    for out in outputs:
        loops_per_pid.setdefault(out["pid"], set()).add(out["loop"])
    assert all(len(loops) == 1 for loops in loops_per_pid.values()), loops_per_pid


def test_submit_many_and_wait_many(client: Client) -> None:
    ids = client.submit_many("tests.add", [{"a": i, "b": i} for i in range(200)], chunk_size=64)
    assert len(set(ids)) == 200
    done = client.wait_many(ids, timeout=60)
    assert [done[i].output for i in ids] == [2 * i for i in range(200)]


def test_cancel_before_start(client: Client) -> None:
    run_id = client.submit("tests.add", {"a": 1, "b": 1}, countdown=30)
    assert client.cancel(run_id) is True
    run = client.wait(run_id, timeout=5)
    assert run.status is RunStatus.CANCELLED
    assert run.started_at is None


def test_chain_passes_each_output_to_the_next_step(client: Client) -> None:
    run_id = client.chain(
        client.signature("tests.double", {"value": 1}),
        client.signature("tests.double"),
        client.signature("tests.double"),
    )
    assert client.result(run_id, timeout=30) == {"value": 8}
    run = client.get(run_id)
    assert run is not None and run.root_id is not None and run.parent_id is not None


def test_fan_out_then_fan_in(client: Client) -> None:
    run_id = client.fan_out(
        [client.signature("tests.add", {"a": i, "b": 1}) for i in range(5)],
        then=client.signature("tests.sum_results"),
    )
    assert client.result(run_id, timeout=30) == sum(i + 1 for i in range(5))


def test_on_finished_callbacks_run_once_after_the_final_state_not_before_retries(
    client: Client,
) -> None:
    key = f"finishing:{uuid.uuid4()}"
    run = client.wait(client.submit("tests.finishing", {"key": key, "fail_times": 2}), timeout=60)
    assert run.status is RunStatus.SUCCEEDED and run.attempts == 3
    notes = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    assert notes.blpop([f"{key}:finished"], timeout=10) == (f"{key}:finished".encode(), b"done")
    assert notes.llen(f"{key}:finished") == 0, "the attempts that were retried noted nothing"


def test_task_bodies_travel_as_json_text_in_the_redis_envelope(
    client: Client, redis_app: ConveyorApp
) -> None:
    queue = f"nobody-{uuid.uuid4().hex}"
    client.app.send_task("conveyor.ping", kwargs={"x": "é"}, queue=queue)
    broker = redis.Redis.from_url(str(redis_app.conf.broker_url))
    try:
        (raw,) = broker.lrange(queue, 0, -1)
    finally:
        broker.delete(queue)
    message = json.loads(raw)
    assert message["properties"]["body_encoding"] == "utf-8"
    args, kwargs, _ = json.loads(message["body"])
    assert (args, kwargs) == ([], {"x": "é"})


@pytest.mark.parametrize("size", [5_000, 20_000, 100_000])
def test_large_outputs_arrive_in_parts_or_are_read_back(
    client: Client, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_back: set[str] = set()
    original = client.runs.get_many
    monkeypatch.setattr(client.runs, "get_many", lambda ids: read_back.update(ids) or original(ids))
    run_id = client.submit("tests.big", {"size": size})
    run = client.wait(run_id, timeout=30)
    assert run.status is RunStatus.SUCCEEDED
    assert run.output == "é" * size
    assert (run_id in read_back) == (size > 15_000)


def test_concurrent_runs_on_a_threads_pool_are_all_recorded(client: Client) -> None:
    ids = client.submit_many("tests.where", [{} for _ in range(60)])
    runs = client.wait_many(ids, timeout=60)
    assert {r.status for r in runs.values()} == {RunStatus.SUCCEEDED}
    assert all(r.output["pool"] == "memory" and r.attempts == 1 for r in runs.values())
