"""vector_collections and vector_items: the truth behind the faiss replicas.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "vector_collections",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("embedder", sa.Text, nullable=False),
        sa.Column("index_kind", sa.Text, nullable=False),
        sa.Column("generation", sa.Text, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", tz, nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("metric IN ('cosine', 'ip', 'l2')", name="metric"),
        sa.CheckConstraint("index_kind IN ('auto', 'flat', 'hnsw', 'ivf')", name="index_kind"),
        sa.CheckConstraint("dim BETWEEN 1 AND 65536", name="dim"),
    )
    op.create_table(
        "vector_items",
        sa.Column(
            "collection",
            sa.Text,
            sa.ForeignKey("vector_collections.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("vector", sa.LargeBinary),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("text", sa.Text),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("embedder", sa.Text),
        sa.Column("embedder_version", sa.Text),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("collection", "id"),
    )
    op.create_index("uq_vector_items_seq", "vector_items", ["collection", "seq"], unique=True)
    op.create_index(
        "ix_vector_items_metadata",
        "vector_items",
        ["metadata"],
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )


def downgrade() -> None:
    op.drop_table("vector_items")
    op.drop_table("vector_collections")
