"""vector_collections.ef_search and .nprobe: a collection's default search breadth.

NULL (every existing collection) keeps the built-in rules.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = ("ef_search", "nprobe")


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("vector_collections", sa.Column(column, sa.Integer))
        op.create_check_constraint(column, "vector_collections", f"{column} BETWEEN 1 AND 4096")


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_column("vector_collections", column)
