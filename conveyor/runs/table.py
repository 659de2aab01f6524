"""agent_runs: one row per run, from queued to its final state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.models.base import Base

_tz = DateTime(timezone=True)


class AgentRun(Base):
    """The durable record of one run. Its id is the Celery task id."""

    __tablename__ = "agent_runs"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    agent: Mapped[str] = mapped_column(Text)
    pool: Mapped[str] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    input: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    output: Mapped[Any | None] = mapped_column(JSONB)
    error_type: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_traceback: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    deliveries: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """Deliveries of the current attempt; above one means a worker died running it."""
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    """Every recorded error, oldest first: attempt, status, type, message, at."""
    enqueued_at: Mapped[datetime | None] = mapped_column(_tz)
    started_at: Mapped[datetime | None] = mapped_column(_tz)
    finished_at: Mapped[datetime | None] = mapped_column(_tz)
    worker: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[str | None] = mapped_column(Text)
    root_id: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(_tz, server_default=text("now()"))

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued','started','retrying','succeeded','failed','rejected','cancelled')",
            name="status",
        ),
        Index(
            "uq_agent_runs_agent_idempotency_key",
            "agent",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_agent_runs_agent_enqueued_at", "agent", "enqueued_at"),
        Index("ix_agent_runs_status_finished_at", "status", "finished_at"),
        Index("ix_agent_runs_root_id", "root_id", postgresql_where=text("root_id IS NOT NULL")),
        Index("ix_agent_runs_updated_at", "updated_at"),
        Index(
            "ix_agent_runs_finished_at",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
    )
