"""Alembic environment: runs on the connection conveyor hands it.

Each feature owns its tables (conveyor/<feature>/table.py); they are registered here, when
alembic runs this file, so that importing `conveyor.models` never imports a feature.
"""

from __future__ import annotations

from alembic import context

# One linear history for every feature's tables: versions/ beside this file, not one per feature.
from conveyor.analytics.table import AnalyticsWatermark, BeatLeader, RunRollup  # noqa: F401
from conveyor.dlq.table import DeadLetter  # noqa: F401
from conveyor.memory.table import MemoryItem, MemorySession  # noqa: F401
from conveyor.models.base import Base
from conveyor.models.effects import RunEffect  # noqa: F401
from conveyor.runs.table import AgentRun  # noqa: F401
from conveyor.vector.table import VectorCollection, VectorItem  # noqa: F401

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
