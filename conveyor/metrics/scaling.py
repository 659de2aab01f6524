"""Desired replicas per pool: one formula for the exporter, KEDA's metrics-api and `autoscale`.

    by_backlog = ceil((ready + reserved) / (concurrency * target_per_slot))
    by_age     = ceil(max(workers, 1) * oldest_age / target_drain_seconds)
                 when oldest_age > target_drain_seconds, else 0
    desired    = clamp(max(by_backlog, by_age), min_replicas, max_replicas)

Backlog says how many workers the waiting work needs; age catches a pool whose workers are
all busy on long runs, where the backlog looks small but nothing moves. Delayed (ETA) messages
are not backlog: they cannot run yet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel

from conveyor.metrics.queues import QueueState
from conveyor.pools import Pool


class ScaleInputs(BaseModel):
    ready: int
    reserved: int
    delayed: int
    oldest_age_seconds: float
    workers: int
    concurrency: int
    target_per_slot: float
    target_drain_seconds: float
    min_replicas: int
    max_replicas: int


class ScaleDecision(BaseModel):
    """What one pool needs, with the inputs and both terms, for /scale and `conveyor status`."""

    pool: str
    queues: list[str]
    desired_replicas: int
    by_backlog: int
    by_age: int
    inputs: ScaleInputs


def desired_replicas(pool: Pool, states: Iterable[QueueState], workers: int) -> ScaleDecision:
    """The replica count `pool` should run given its queues' state and live workers."""
    mine = [s for s in states if s.pool == pool.name]
    inputs = ScaleInputs(
        ready=sum(s.ready for s in mine),
        reserved=sum(s.reserved for s in mine),
        delayed=sum(s.delayed for s in mine),
        oldest_age_seconds=max((s.oldest_age_seconds for s in mine), default=0.0),
        workers=workers,
        concurrency=pool.concurrency,
        target_per_slot=pool.target_per_slot,
        target_drain_seconds=pool.target_drain_seconds,
        min_replicas=pool.min_replicas,
        max_replicas=pool.max_replicas,
    )
    backlog = inputs.ready + inputs.reserved
    by_backlog = math.ceil(backlog / (pool.concurrency * pool.target_per_slot))
    by_age = 0
    if inputs.oldest_age_seconds > pool.target_drain_seconds:
        by_age = math.ceil(max(workers, 1) * inputs.oldest_age_seconds / pool.target_drain_seconds)
    desired = min(pool.max_replicas, max(pool.min_replicas, by_backlog, by_age))
    return ScaleDecision(
        pool=pool.name,
        queues=[s.queue for s in mine],
        desired_replicas=desired,
        by_backlog=by_backlog,
        by_age=by_age,
        inputs=inputs,
    )
