"""Where a run is in its life."""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    """Where a run is in its life."""

    QUEUED = "queued"
    """Published to the broker, not yet picked up by a worker."""
    STARTED = "started"
    """A worker is executing it."""
    RETRYING = "retrying"
    """A transient error occurred; it is back on the queue with a backoff."""
    SUCCEEDED = "succeeded"
    """Finished; `output` holds the result."""
    FAILED = "failed"
    """Finished with an error that was not retried, or retries ran out."""
    REJECTED = "rejected"
    """The input failed validation; never retried."""
    CANCELLED = "cancelled"
    """Cancelled before it finished."""

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.CANCELLED}
)
