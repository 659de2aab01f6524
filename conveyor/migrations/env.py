"""Alembic environment: runs on the connection conveyor hands it (conveyor.models.migrate).

The schema's one linear history, across the features: each feature owns its tables
(conveyor/<feature>/table.py), registered here, above them all.
"""

from __future__ import annotations

from alembic import context

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
