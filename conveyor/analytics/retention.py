"""Run retention: purge old finished runs from agent_runs in bounded batches.

Runs finished more than `days` ago go; failed and rejected ones stay until `failed_days`.
Runs that are not final (no finished_at) are never touched, and neither is run_rollups, so
the history of purged runs survives in their rollups. A purged run's effect markers
(run_effects, see conveyor.effects) go with it.
"""

from __future__ import annotations

import time
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Engine, text

MAX_BATCH = 100_000

_CUTOFFS = text(
    "SELECT now() - make_interval(days => :days), now() - make_interval(days => :failed_days)"
)
_DELETE = text(
    """
    WITH doomed AS (
        SELECT id FROM agent_runs
        WHERE finished_at < :cutoff
          AND status IN ('succeeded', 'failed', 'rejected', 'cancelled')
          AND (status NOT IN ('failed', 'rejected') OR finished_at < :failed_cutoff)
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM agent_runs WHERE id IN (SELECT id FROM doomed) RETURNING status
    ), markers AS (
        DELETE FROM run_effects WHERE run_id IN (SELECT id FROM doomed)
    )
    SELECT count(*), count(*) FILTER (WHERE status IN ('failed', 'rejected')) FROM gone
    """
)


class RetentionPolicy(BaseModel):
    """How long runs are kept (from CONVEYOR_RETENTION_* settings)."""

    model_config = ConfigDict(frozen=True)

    days: int = Field(default=30, ge=1)
    failed_days: int = Field(default=90, ge=1)
    batch: int = Field(default=5000, ge=1, le=MAX_BATCH)

    @model_validator(mode="after")
    def _failures_kept_longer(self) -> RetentionPolicy:
        if self.failed_days < self.days:
            raise ValueError(f"failed_days ({self.failed_days}) must be >= days ({self.days})")
        return self


class RetentionRequest(BaseModel):
    """Input of `analytics.retention`; `{}` uses the settings."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)
    """Rows per DELETE; default CONVEYOR_RETENTION_BATCH."""
    max_batches: int = Field(default=1000, ge=1, le=1_000_000)
    max_seconds: float = Field(default=120.0, gt=0, le=3600)
    """Stop starting new batches after this long; the next run carries on."""


class RetentionResult(BaseModel):
    deleted: int
    """Runs purged, all statuses."""
    deleted_failed: int
    """Of which failed or rejected."""
    batches: int
    """DELETE statements run."""
    largest_batch: int
    complete: bool
    """False when a budget (batches or seconds) stopped the purge with runs possibly left."""
    cutoff: datetime
    failed_cutoff: datetime
    seconds: float


def purge_runs(
    engine: Engine,
    policy: RetentionPolicy,
    *,
    max_batches: int = 1000,
    max_seconds: float = 120.0,
) -> RetentionResult:
    """Delete expired runs, one short transaction per batch, until none are left or a
    budget runs out. Cutoffs are fixed once, by the database's clock."""
    started = time.monotonic()
    with engine.connect() as conn:
        row = conn.execute(_CUTOFFS, {"days": policy.days, "failed_days": policy.failed_days})
        cutoff, failed_cutoff = row.one()
    deleted = failed = batches = largest = 0
    complete = False
    while batches < max_batches and time.monotonic() - started < max_seconds:
        params = {"cutoff": cutoff, "failed_cutoff": failed_cutoff, "batch": policy.batch}
        with engine.begin() as conn:
            count, count_failed = conn.execute(_DELETE, params).one()
        batches += 1
        deleted, failed, largest = deleted + count, failed + count_failed, max(largest, count)
        if count < policy.batch:
            complete = True
            break
    return RetentionResult(
        deleted=deleted,
        deleted_failed=failed,
        batches=batches,
        largest_batch=largest,
        complete=complete,
        cutoff=cutoff,
        failed_cutoff=failed_cutoff,
        seconds=round(time.monotonic() - started, 3),
    )
