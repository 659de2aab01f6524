"""Alembic environment: runs on the connection conveyor hands it."""

from __future__ import annotations

from alembic import context

from conveyor.models.base import Base
from conveyor.runs.table import AgentRun  # noqa: F401  (registers the table)

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
