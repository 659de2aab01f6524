"""memory_items and memory_sessions: the prompt-memory store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.models.base import Base

_tz = DateTime(timezone=True)
FTS_CONFIG = "simple"
"""Language-neutral full-text configuration: no stemming, no stop words, any script."""
ROLES = ("system", "user", "assistant", "tool", "note")


class MemoryItem(Base):
    """One remembered turn, prompt or fact, scoped by namespace and session."""

    __tablename__ = "memory_items"

    id: Mapped[Any] = mapped_column(Uuid(as_uuid=False), primary_key=True)
    namespace: Mapped[str] = mapped_column(Text)
    session: Mapped[str] = mapped_column(Text)
    seq: Mapped[int] = mapped_column(BigInteger)
    role: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    escaped: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    content_hash: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(_tz, server_default=text("now()"))
    expires_at: Mapped[datetime | None] = mapped_column(_tz)
    search: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(f"to_tsvector('{FTS_CONFIG}'::regconfig, content)", persisted=True)
    )

    __table_args__ = (
        CheckConstraint("role IN (" + ", ".join(f"'{r}'" for r in ROLES) + ")", name="role"),
        Index("uq_memory_items_window", "namespace", "session", "seq", unique=True),
        Index("ix_memory_items_hash", "namespace", "session", "content_hash"),
        Index("ix_memory_items_search", "search", postgresql_using="gin"),
        Index(
            "ix_memory_items_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
        Index(
            "ix_memory_items_expires_at",
            "expires_at",
            postgresql_where=text("expires_at IS NOT NULL"),
        ),
    )


class MemorySession(Base):
    """A session's sequence counter; its row lock serialises writers of that session."""

    __tablename__ = "memory_sessions"

    namespace: Mapped[str] = mapped_column(Text)
    session: Mapped[str] = mapped_column(Text)
    last_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (PrimaryKeyConstraint("namespace", "session"),)
