"""dead_letters: poison messages and runs that ran out of retries or deliveries, per pool;
agent_runs counts deliveries of the current attempt and keeps every attempt's error.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

REASONS = "'retries_exhausted','worker_lost','not_json','unknown_task','missing_fields','too_large'"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.add_column(
        "agent_runs",
        sa.Column("deliveries", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.add_column("agent_runs", sa.Column("errors", JSONB))
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("pool", sa.Text, nullable=False),
        sa.Column("queue", sa.Text),
        sa.Column("run_id", sa.Text),
        sa.Column("task", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("headers", JSONB, nullable=False),
        sa.Column("properties", JSONB, nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("body_bytes", sa.BigInteger, nullable=False),
        sa.Column("body_truncated", sa.Boolean, nullable=False),
        sa.Column("content_type", sa.Text),
        sa.Column("errors", JSONB, nullable=False),
        sa.Column("created_at", tz, nullable=False, server_default=sa.text("now()")),
        sa.Column("replayed_at", tz),
        sa.CheckConstraint(f"reason IN ({REASONS})", name="reason"),
    )
    op.create_index(
        "uq_dead_letters_run_id",
        "dead_letters",
        ["run_id"],
        unique=True,
        postgresql_where=sa.text("run_id IS NOT NULL AND replayed_at IS NULL"),
    )
    op.create_index(
        "ix_dead_letters_pool_created_at",
        "dead_letters",
        ["pool", "created_at"],
        postgresql_where=sa.text("replayed_at IS NULL"),
    )
    op.create_index("ix_dead_letters_created_at", "dead_letters", ["created_at"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_column("agent_runs", "errors")
    op.drop_column("agent_runs", "deliveries")
