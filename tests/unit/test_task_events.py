"""Celery events into Prometheus series, fed by hand (no broker needed)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from conveyor.metrics.events import TaskEvents
from conveyor.metrics.queues import FirstSeen, enqueue_time


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_task_events_count_states_durations_and_queue_wait() -> None:
    registry = CollectorRegistry()
    events = TaskEvents(app=None, registry=registry)  # type: ignore[arg-type]
    now = time.time()
    host = "default.abc@box"
    feed: list[dict[str, Any]] = [
        {"type": "task-received", "uuid": "1", "name": "demo.add", "hostname": host},
        {"type": "task-started", "uuid": "1", "hostname": host, "timestamp": now,
         "enqueued_at": now - 2.5, "name": "demo.add"},
        {"type": "task-succeeded", "uuid": "1", "hostname": host, "runtime": 0.2},
        {"type": "task-received", "uuid": "2", "name": "demo.add", "hostname": host},
        {"type": "task-failed", "uuid": "2", "hostname": host, "runtime": 1.5},
        {"type": "task-received", "uuid": "3", "name": "demo.add", "hostname": host},
    ]  # fmt: skip
    for event in feed:
        events.handle(event)
    labels = {"agent": "demo.add", "pool": "default"}
    assert _value(registry, "conveyor_tasks_total", **labels, state="received") == 3
    assert _value(registry, "conveyor_tasks_total", **labels, state="succeeded") == 1
    assert _value(registry, "conveyor_tasks_total", **labels, state="failed") == 1
    assert _value(registry, "conveyor_task_duration_seconds_count", **labels) == 2
    assert _value(registry, "conveyor_task_duration_seconds_sum", **labels) == 1.7
    assert _value(registry, "conveyor_task_queue_wait_seconds_sum", **labels) == 2.5
    assert events.last_event_at is not None


def test_a_worker_counts_while_its_heartbeats_are_fresh() -> None:
    events = TaskEvents(app=None, registry=CollectorRegistry())  # type: ignore[arg-type]
    beat = {"type": "worker-heartbeat", "hostname": "vector.x1@box", "freq": 2.0, "active": 1,
            "timestamp": time.time(), "local_received": time.time()}  # fmt: skip
    events.handle(beat)
    events.handle({**beat, "hostname": "vector.x2@box", "active": 0})
    events.handle({**beat, "hostname": "default.y@box", "timestamp": time.time() - 600,
                   "local_received": time.time() - 600})  # fmt: skip
    assert events.workers() == {"vector": (2, 1)}


def test_enqueue_time_comes_from_the_header_or_first_sight() -> None:
    seen = FirstSeen()
    assert enqueue_time(b"2026-01-01T00:00:00+00:00", seen, now=1e10) == 1767225600.0
    assert enqueue_time(b"id:b", seen, now=100.0) == 100.0
    assert enqueue_time(b"id:b", seen, now=250.0) == 100.0
    assert enqueue_time(b"id:", seen, now=1.0) is None
    assert enqueue_time(None, seen, now=1.0) is None


def test_runs_held_until_a_future_eta_are_delayed_until_it_passes_or_their_worker_dies() -> None:
    events = TaskEvents(app=None, registry=CollectorRegistry())  # type: ignore[arg-type]
    now = time.time()
    iso = datetime.fromtimestamp
    beat = {"type": "worker-heartbeat", "freq": 2.0, "active": 0, "timestamp": now,
            "local_received": now}  # fmt: skip
    for node in ("default.a@box", "memory.b@box"):
        events.handle({**beat, "hostname": node})
    feed = [
        ("1", "default.a@box", now + 600),
        ("2", "default.a@box", now + 600),
        ("3", "memory.b@box", now + 600),
        ("4", "default.a@box", now - 1),
        ("5", "default.a@box", None),
    ]
    for uuid, node, eta in feed:
        event = {"type": "task-received", "uuid": uuid, "name": "t", "hostname": node}
        events.handle(event | ({"eta": iso(eta, UTC).isoformat()} if eta else {}))
    assert events.delayed() == {"default": 2, "memory": 1}
    events.handle({**beat, "type": "worker-offline", "hostname": "memory.b@box"})
    assert events.delayed() == {"default": 2}, "a dead worker's held runs go back to the queue"
    events.handle({"type": "task-received", "uuid": "6", "name": "t", "hostname": "default.a@box",
                   "eta": iso(now + 0.2, UTC).isoformat()})  # fmt: skip
    assert events.delayed() == {"default": 3}
    deadline = time.monotonic() + 5
    while events.delayed() != {"default": 2}:
        assert time.monotonic() < deadline, "a held run stops being delayed once its ETA passes"
        time.sleep(0.05)
