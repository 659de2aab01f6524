"""The built-in io pool (asyncio, 1,000 slots a worker): its replicas follow backlog over
1,000 x target_per_slot, for the exporter, KEDA's /scale and `conveyor autoscale` alike, and
its busy ratio is its runs in flight over its slots."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from conveyor.config import load_settings
from conveyor.metrics import autoscale
from conveyor.metrics.events import TaskEvents
from conveyor.metrics.exporter import PoolView, QueueCollector, scale_document
from conveyor.metrics.queues import QueueState
from conveyor.metrics.scaling import desired_replicas
from conveyor.pools import BUILTIN_POOLS

IO = BUILTIN_POOLS["io"]


def _io_queue(ready: int, reserved: int = 0) -> list[QueueState]:
    return [
        QueueState(
            queue="io", pool="io", ready=ready, reserved=reserved, delayed=0,
            oldest_age_seconds=0.0, reserved_source="redis",
        )
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("ready", "reserved", "workers", "desired"),
    [
        (0, 0, 0, 1),  # idle: the floor
        (0, 1000, 1, 1),  # one worker's 1,000 runs in flight
        (1, 1000, 1, 2),  # the 1,001st run needs a second worker
        (1500, 1000, 2, 3),  # 2,500 / 1,000
        (50_000, 0, 3, 10),  # the ceiling
    ],
)
def test_the_io_pool_scales_on_backlog_over_its_1000_slots(
    ready: int, reserved: int, workers: int, desired: int
) -> None:
    decision = desired_replicas(IO, _io_queue(ready, reserved), workers)
    assert decision.inputs.concurrency * decision.inputs.target_per_slot == 1000
    assert decision.desired_replicas == desired
    document = scale_document(decision, _io_queue(ready, reserved))
    assert (document["concurrency"], document["desired_replicas"]) == (1000, desired)


class _Reader:
    """The broker reading `conveyor autoscale` makes: 2,500 io runs waiting."""

    def __init__(self, app: Any, ttl: float) -> None:
        pass

    def read(self, fresh: bool = False) -> list[QueueState]:
        return _io_queue(2500)

    def close(self) -> None:
        pass


def test_conveyor_autoscale_runs_one_io_worker_per_1000_waiting_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(autoscale, "QueueReader", _Reader)
    app = SimpleNamespace(settings=load_settings())
    scaler = autoscale.LocalAutoscaler(app, ["io"])  # type: ignore[arg-type]
    launched: list[str] = []

    def launch(pool: str) -> Any:
        launched.append(pool)
        return SimpleNamespace(poll=lambda: None)

    monkeypatch.setattr(scaler, "_launch", launch)
    (event,) = scaler.tick(now=0.0)
    assert (event.action, event.desired, event.replicas) == ("scale-out", 3, 3)
    assert launched == ["io"] * 3


def test_busy_ratio_of_io_workers_is_their_runs_in_flight_over_their_slots() -> None:
    """A worker's heartbeat carries `active`, its requests accepted and not finished: on an
    asyncio worker, the runs in flight on its loop."""
    events = TaskEvents(app=None, registry=CollectorRegistry())  # type: ignore[arg-type]
    now = time.time()
    beat = {"type": "worker-heartbeat", "freq": 2.0, "timestamp": now, "local_received": now}
    events.handle({**beat, "hostname": "io@box-1", "active": 750})
    events.handle({**beat, "hostname": "io.demo@box-2", "active": 250})
    events.handle({**beat, "hostname": "default@box-1", "active": 1})
    app = SimpleNamespace(settings=load_settings(), uses_redis=True)
    view = PoolView(app, SimpleNamespace(read=list), events.workers)  # type: ignore[arg-type]
    families = {f.name: dict(f.samples) for f in QueueCollector(view).families()}
    assert families["conveyor_pool_workers"][("io",)] == 2
    assert families["conveyor_pool_busy_ratio"][("io",)] == 0.5  # 1,000 of 2 x 1,000 slots
    assert families["conveyor_pool_busy_ratio"][("default",)] == 0.5  # 1 of 2 processes
