"""memory_items and memory_sessions: the prompt-memory store.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TRY_TIMESTAMPTZ = """
CREATE OR REPLACE FUNCTION conveyor_try_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "memory_items",
        sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True),
        sa.Column("namespace", sa.Text, nullable=False),
        sa.Column("session", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("escaped", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("created_at", tz, nullable=False, server_default=sa.text("now()")),
        sa.Column("expires_at", tz),
        sa.Column(
            "search",
            TSVECTOR,
            sa.Computed("to_tsvector('simple'::regconfig, content)", persisted=True),
        ),
        sa.CheckConstraint("role IN ('system', 'user', 'assistant', 'tool', 'note')", name="role"),
    )
    op.create_index(
        "uq_memory_items_window", "memory_items", ["namespace", "session", "seq"], unique=True
    )
    op.create_index(
        "ix_memory_items_hash", "memory_items", ["namespace", "session", "content_hash"]
    )
    op.create_index("ix_memory_items_search", "memory_items", ["search"], postgresql_using="gin")
    op.create_index(
        "ix_memory_items_metadata",
        "memory_items",
        ["metadata"],
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )
    op.create_index(
        "ix_memory_items_expires_at",
        "memory_items",
        ["expires_at"],
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )
    op.create_table(
        "memory_sessions",
        sa.Column("namespace", sa.Text, nullable=False),
        sa.Column("session", sa.Text, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("namespace", "session"),
    )
    op.execute(TRY_TIMESTAMPTZ)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS conveyor_try_timestamptz(text)")
    op.drop_table("memory_sessions")
    op.drop_table("memory_items")
