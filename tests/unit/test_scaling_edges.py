"""Edges of the desired-replicas formula that mutation testing found unguarded (issue 17).

Each test names the mutant of conveyor/metrics/scaling.py it kills (benchmarks/mutation.py).
"""

from __future__ import annotations

from conveyor.metrics.queues import QueueState
from conveyor.metrics.scaling import desired_replicas
from conveyor.pools import Pool

POOL = Pool(name="default", concurrency=4, min_replicas=1, max_replicas=8, target_per_slot=2.0,
            target_drain_seconds=30.0)  # fmt: skip


def _state(pool: str, ready: int, age: float) -> QueueState:
    return QueueState(
        queue=f"{pool}-q", pool=pool, ready=ready, reserved=0, delayed=0,
        oldest_age_seconds=age, reserved_source="redis",
    )  # fmt: skip


def test_a_pool_without_any_queue_state_is_idle_not_an_error() -> None:
    """The exporter asks for every pool, also one whose queues the broker did not report:
    its oldest age is 0 (not missing, not 1 s) and it sits at its floor."""
    decision = desired_replicas(POOL, [_state("memory", 500, 600.0)], workers=2)
    assert decision.inputs.oldest_age_seconds == 0.0
    assert (decision.queues, decision.by_backlog, decision.by_age) == ([], 0, 0)
    assert decision.desired_replicas == POOL.min_replicas


def test_an_age_of_exactly_the_drain_target_does_not_scale() -> None:
    """`by_age` starts only past target_drain_seconds, as the formula says."""
    at_target = desired_replicas(POOL, [_state("default", 1, 30.0)], workers=1)
    assert at_target.by_age == 0
    past = desired_replicas(POOL, [_state("default", 1, 30.5)], workers=1)
    assert past.by_age == 2  # ceil(1 x 30.5 / 30)


def test_a_pool_scaled_to_zero_with_an_old_message_counts_as_one_worker() -> None:
    """With no live worker the age term is computed for one worker: ceil(1 x 90 / 30) = 3."""
    decision = desired_replicas(POOL, [_state("default", 1, 90.0)], workers=0)
    assert decision.by_age == 3
    assert decision.desired_replicas == 3
