"""dead_letters: messages and runs a pool gave up on, kept for `conveyor dlq`."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, Identity, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.models.base import Base


class DeadLetterReason(enum.StrEnum):
    """Why a message or run was dead-lettered."""

    RETRIES_EXHAUSTED = "retries_exhausted"
    """The run failed with a retryable error on its last allowed attempt."""
    WORKER_LOST = "worker_lost"
    """The run was delivered more than `max_deliveries` times: its workers kept dying."""
    NOT_JSON = "not_json"
    """The body could not be decoded (wrong content type, or not valid JSON)."""
    UNKNOWN_TASK = "unknown_task"
    """No agent or task of that name is registered on the pool's workers."""
    MISSING_FIELDS = "missing_fields"
    """Not a task message: no id or task header, or a body that is not [args, kwargs, embed]."""
    TOO_LARGE = "too_large"
    """The body is larger than `max_message_bytes`."""

    @property
    def replayable(self) -> bool:
        """Whether the entry holds a whole, decodable task message worth publishing again."""
        return self in REPLAYABLE

    @property
    def error_type(self) -> str | None:
        """The error type a refused message's run is rejected with; None for the reasons
        where the worker ran the task and records the run's failure itself."""
        return _MESSAGE_ERRORS.get(self)


REPLAYABLE = frozenset(
    {
        DeadLetterReason.RETRIES_EXHAUSTED,
        DeadLetterReason.WORKER_LOST,
        DeadLetterReason.UNKNOWN_TASK,
    }
)
_MESSAGE_ERRORS = {
    DeadLetterReason.NOT_JSON: "UndecodableMessage",
    DeadLetterReason.UNKNOWN_TASK: "NotRegistered",
    DeadLetterReason.MISSING_FIELDS: "MalformedMessage",
    DeadLetterReason.TOO_LARGE: "MessageTooLarge",
}
_tz = DateTime(timezone=True)


class DeadLetter(Base):
    """One dead-lettered message, with the run's error history; pending until replayed."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    pool: Mapped[str] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(Text)
    task: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB)
    body: Mapped[str | None] = mapped_column(Text)
    body_bytes: Mapped[int] = mapped_column(BigInteger)
    body_truncated: Mapped[bool] = mapped_column(Boolean)
    content_type: Mapped[str | None] = mapped_column(Text)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(_tz, server_default=text("now()"))
    replayed_at: Mapped[datetime | None] = mapped_column(_tz)

    __table_args__ = (
        CheckConstraint(
            "reason IN (" + ",".join(f"'{r.value}'" for r in DeadLetterReason) + ")",
            name="reason",
        ),
        Index(
            "uq_dead_letters_run_id",
            "run_id",
            unique=True,
            postgresql_where=text("run_id IS NOT NULL AND replayed_at IS NULL"),
        ),
        Index(
            "ix_dead_letters_pool_created_at",
            "pool",
            "created_at",
            postgresql_where=text("replayed_at IS NULL"),
        ),
        Index("ix_dead_letters_created_at", "created_at"),
    )
