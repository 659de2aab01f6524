"""A run as callers see it, what a producer or worker writes of it, and a claim's answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, field_validator

from conveyor.models import jsonb
from conveyor.redaction import mask_secrets
from conveyor.runs.status import RunStatus


def _restore(value: Any) -> Any:
    return jsonb.restore(value)


class Run(BaseModel):
    """A run as callers see it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    agent: str
    pool: str
    queue: str | None = None
    status: RunStatus

    _restore_json = field_validator("input", "output")(_restore)
    input: dict[str, Any] | None = None
    output: Any = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    attempts: int = 0
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    idempotency_key: str | None = None
    parent_id: str | None = None
    root_id: str | None = None


class NewRun(BaseModel):
    """What a producer or a worker knows about a run when it first writes it."""

    id: str
    agent: str
    pool: str
    queue: str | None = None
    input: dict[str, Any] | None = None
    idempotency_key: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    enqueued_at: datetime | None = None


class Outcome(BaseModel):
    """A state change a worker reports: retrying, or a final state."""

    run: NewRun
    status: RunStatus
    output: Any = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    worker: str | None = None
    attempts: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @field_validator("error_message", "error_traceback")
    @classmethod
    def _mask_passwords(cls, value: str | None) -> str | None:
        """Errors often quote a connection URL; its password is never stored or shown."""
        return None if value is None else mask_secrets(value)


class Claim(BaseModel):
    """The answer to a worker asking to start a run."""

    run_id: str
    claimed: bool
    status: RunStatus
    output: Any = None

    _restore_json = field_validator("output")(_restore)
    duplicate_of: str | None = None
    deliveries: int = 0
    """Deliveries of the current attempt, this one included, when claimed."""


class ClaimRequest(NamedTuple):
    """A worker's request to start a run, as the asyncio pool's group commit queues it."""

    run: NewRun
    worker: str
    redelivered: bool = False
