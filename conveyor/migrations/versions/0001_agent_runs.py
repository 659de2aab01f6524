"""agent_runs: the durable record of every run.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "agent_runs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("agent", sa.Text, nullable=False),
        sa.Column("pool", sa.Text, nullable=False),
        sa.Column("queue", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("input", JSONB),
        sa.Column("output", JSONB),
        sa.Column("error_type", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("error_traceback", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("enqueued_at", tz),
        sa.Column("started_at", tz),
        sa.Column("finished_at", tz),
        sa.Column("worker", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("parent_id", sa.Text),
        sa.Column("root_id", sa.Text),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint(
            "status IN ('queued','started','retrying','succeeded','failed','rejected','cancelled')",
            name="status",
        ),
    )
    op.create_index(
        "uq_agent_runs_agent_idempotency_key",
        "agent_runs",
        ["agent", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index("ix_agent_runs_agent_enqueued_at", "agent_runs", ["agent", "enqueued_at"])
    op.create_index("ix_agent_runs_status_finished_at", "agent_runs", ["status", "finished_at"])
    op.create_index(
        "ix_agent_runs_root_id",
        "agent_runs",
        ["root_id"],
        postgresql_where=sa.text("root_id IS NOT NULL"),
    )
    op.create_index("ix_agent_runs_updated_at", "agent_runs", ["updated_at"])


def downgrade() -> None:
    op.drop_table("agent_runs")
