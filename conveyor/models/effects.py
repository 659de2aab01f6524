"""run_effects: one marker per effect committed by `conveyor.effect_once`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.models.base import Base


class RunEffect(Base):
    """An effect that committed: the run that did it, and the JSON result it kept."""

    __tablename__ = "run_effects"

    agent: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    """The run id, or the agent's own key (`effect_once(..., key="order-42")`)."""
    run_id: Mapped[str] = mapped_column(Text, index=True)
    result: Mapped[Any] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
