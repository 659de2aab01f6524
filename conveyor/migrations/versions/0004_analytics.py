"""run_rollups, analytics_watermarks, beat_leader; agent_runs indexed by finished_at.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "run_rollups",
        sa.Column("grain", sa.Text, nullable=False),
        sa.Column("bucket", tz, nullable=False),
        sa.Column("agent", sa.Text, nullable=False),
        sa.Column("pool", sa.Text, nullable=False),
        *[
            sa.Column(name, sa.Integer, nullable=False)
            for name in ("runs", "succeeded", "failed", "rejected", "cancelled", "retries")
        ],
        *[
            sa.Column(name, sa.Float)
            for name in ("duration_p50", "duration_p95", "duration_p99", "wait_p50", "wait_p95")
        ],
        sa.Column("throughput", sa.Float, nullable=False),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("grain", "bucket", "agent", "pool"),
        sa.CheckConstraint("grain IN ('minute','hour')", name="grain"),
    )
    op.create_table(
        "analytics_watermarks",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", tz, nullable=False),
    )
    op.create_table(
        "beat_leader",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("renewed_at", tz, nullable=False),
    )
    op.create_index(
        "ix_agent_runs_finished_at",
        "agent_runs",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_agent_runs_finished_at", "agent_runs")
    op.drop_table("beat_leader")
    op.drop_table("analytics_watermarks")
    op.drop_table("run_rollups")
