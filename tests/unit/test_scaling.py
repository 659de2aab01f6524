"""The desired-replicas formula, the same for the exporter, /scale and `conveyor autoscale`."""

from __future__ import annotations

import pytest

from conveyor.metrics.queues import QueueState
from conveyor.metrics.scaling import desired_replicas
from conveyor.pools import Pool


def _state(queue: str, pool: str, ready: int, reserved: int = 0, age: float = 0.0) -> QueueState:
    return QueueState(
        queue=queue, pool=pool, ready=ready, reserved=reserved, delayed=3,
        oldest_age_seconds=age, reserved_source="redis",
    )  # fmt: skip


POOL = Pool(name="default", concurrency=4, min_replicas=1, max_replicas=8, target_per_slot=2.0,
            target_drain_seconds=30.0)  # fmt: skip


@pytest.mark.parametrize(
    ("ready", "reserved", "age", "workers", "by_backlog", "by_age", "desired"),
    [
        (0, 0, 0.0, 0, 0, 0, 1),  # idle: the floor
        (8, 0, 0.0, 1, 1, 0, 1),  # 8 / (4 slots x 2) = 1
        (9, 0, 0.0, 1, 2, 0, 2),  # a ninth message needs a second worker
        (20, 4, 0.0, 1, 3, 0, 3),  # reserved counts as backlog
        (2, 0, 90.0, 2, 1, 6, 6),  # stuck: 90 s old against 30 s -> 2 workers x 3
        (1000, 0, 0.0, 1, 125, 0, 8),  # the ceiling
    ],
)
def test_desired_replicas_combines_backlog_and_age_within_bounds(
    ready: int, reserved: int, age: float, workers: int, by_backlog: int, by_age: int, desired: int
) -> None:
    states = [_state("default", "default", ready, reserved, age), _state("other", "memory", 500)]
    decision = desired_replicas(POOL, states, workers)
    assert (decision.by_backlog, decision.by_age, decision.desired_replicas) == (
        by_backlog,
        by_age,
        desired,
    )
    assert decision.queues == ["default"] and decision.inputs.delayed == 3


def test_a_pool_may_scale_to_zero_only_when_asked() -> None:
    idle = [_state("q", "default", 0)]
    assert desired_replicas(POOL, idle, 3).desired_replicas == 1
    scale_to_zero = POOL.model_copy(update={"min_replicas": 0})
    assert desired_replicas(scale_to_zero, idle, 3).desired_replicas == 0


def test_replica_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="min_replicas 5 is above max_replicas 2"):
        Pool(name="p", min_replicas=5, max_replicas=2)
