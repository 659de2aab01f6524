"""Pools: named queues plus the worker settings that suit their work."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PoolKind = Literal["prefork", "threads", "solo", "asyncio"]
MAX_SLOTS = 512
"""Most processes or threads one worker of a prefork or threads pool may run."""
MAX_ASYNC_SLOTS = 10_000
"""Most runs one worker of an asyncio pool may keep in flight."""
ASYNC_DEFAULT_CONCURRENCY = 1000
CATCH_ALL_QUEUE = "celery"
"""Where a plain Celery client that knows no routes publishes; the default pool reads it."""


class Pool(BaseModel):
    """One worker pool: the unit of routing, of worker settings and of scaling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    concurrency: int = Field(default=2, ge=1, le=MAX_ASYNC_SLOTS)
    """Processes or threads (prefork, threads), or runs in flight (asyncio; default 1000)."""
    kind: PoolKind = "prefork"
    prefetch_multiplier: int = Field(default=1, ge=1, le=1000)
    max_tasks_per_child: int | None = Field(default=None, ge=1)
    max_memory_per_child_kb: int | None = Field(default=None, ge=1024)
    min_replicas: int = Field(default=1, ge=0, le=1000)
    """Fewest workers the autoscalers keep (0 lets an idle pool scale to zero)."""
    max_replicas: int = Field(default=10, ge=1, le=1000)
    target_per_slot: float = Field(default=1.0, gt=0)
    """Backlog (ready + reserved) one concurrency slot should carry."""
    target_drain_seconds: float = Field(default=60.0, gt=0)
    """How old the oldest waiting message may get before the pool scales out on age alone."""

    @model_validator(mode="before")
    @classmethod
    def _async_default_concurrency(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "asyncio" and "concurrency" not in data:
            return {**data, "concurrency": ASYNC_DEFAULT_CONCURRENCY}
        return data

    @model_validator(mode="after")
    def _slots_fit_the_kind(self) -> Pool:
        if self.kind != "asyncio" and self.concurrency > MAX_SLOTS:
            raise ValueError(
                f"concurrency {self.concurrency} is above {MAX_SLOTS} for a {self.kind} pool "
                f"(kind asyncio allows up to {MAX_ASYNC_SLOTS})"
            )
        return self

    @model_validator(mode="after")
    def _replica_bounds(self) -> Pool:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}"
            )
        return self

    def queue(self, prefix: str) -> str:
        """The broker queue this pool's agents are routed to."""
        return f"{prefix}{self.name}"

    def queues(self, prefix: str) -> list[str]:
        """Every queue a worker of this pool consumes."""
        if self.name == "default":
            return [self.queue(prefix), CATCH_ALL_QUEUE]
        return [self.queue(prefix)]


BUILTIN_POOLS: dict[str, Pool] = {
    "default": Pool(name="default", concurrency=2),
    "io": Pool(
        name="io",
        kind="asyncio",
        concurrency=ASYNC_DEFAULT_CONCURRENCY,
        prefetch_multiplier=1,
        target_per_slot=1.0,
    ),
    "memory": Pool(name="memory", concurrency=4, kind="threads"),
    "vector": Pool(name="vector", concurrency=1, max_memory_per_child_kb=4_000_000),
    "analytics": Pool(name="analytics", concurrency=1, max_tasks_per_child=100),
}
