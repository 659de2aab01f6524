"""run_rollups, analytics_watermarks and beat_leader: analytics and beat state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Float, Integer, PrimaryKeyConstraint, Text
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.models.base import Base

_tz = DateTime(timezone=True)


class RunRollup(Base):
    """Finished runs of one agent on one pool in one minute or hour (by finished_at)."""

    __tablename__ = "run_rollups"

    grain: Mapped[str] = mapped_column(Text)
    bucket: Mapped[datetime] = mapped_column(_tz)
    agent: Mapped[str] = mapped_column(Text)
    pool: Mapped[str] = mapped_column(Text)
    runs: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[int] = mapped_column(Integer)
    cancelled: Mapped[int] = mapped_column(Integer)
    retries: Mapped[int] = mapped_column(Integer)
    """Attempts beyond the first, summed."""
    duration_p50: Mapped[float | None] = mapped_column(Float)
    duration_p95: Mapped[float | None] = mapped_column(Float)
    duration_p99: Mapped[float | None] = mapped_column(Float)
    wait_p50: Mapped[float | None] = mapped_column(Float)
    wait_p95: Mapped[float | None] = mapped_column(Float)
    throughput: Mapped[float] = mapped_column(Float)
    """Finished runs per second over the bucket."""
    updated_at: Mapped[datetime] = mapped_column(_tz)

    __table_args__ = (
        PrimaryKeyConstraint("grain", "bucket", "agent", "pool"),
        CheckConstraint("grain IN ('minute','hour')", name="grain"),
    )


class AnalyticsWatermark(Base):
    """How far an incremental job has read: agent_runs.updated_at already rolled up."""

    __tablename__ = "analytics_watermarks"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[datetime] = mapped_column(_tz)


class BeatLeader(Base):
    """Who leads `conveyor beat` and when it last renewed (the lock itself is advisory)."""

    __tablename__ = "beat_leader"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    holder: Mapped[str] = mapped_column(Text)
    renewed_at: Mapped[datetime] = mapped_column(_tz)
