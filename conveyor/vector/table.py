"""vector_collections and vector_items: the source of truth of every faiss replica."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Text,
)
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.models.base import Base

_tz = DateTime(timezone=True)
METRICS = ("cosine", "ip", "l2")
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class VectorCollection(Base):
    """A named set of vectors of one dimension, metric, embedder and index kind."""

    __tablename__ = "vector_collections"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(Text)
    embedder: Mapped[str] = mapped_column(Text)
    index_kind: Mapped[str] = mapped_column(Text)
    ef_search: Mapped[int | None] = mapped_column(Integer)
    """Default HNSW breadth of its searches; NULL: the built-in rule."""
    nprobe: Mapped[int | None] = mapped_column(Integer)
    """Default IVF lists of its searches; NULL: the built-in rule."""
    generation: Mapped[str] = mapped_column(Text)
    """New for every create, so a replica notices a collection dropped and made again."""
    last_seq: Mapped[int] = mapped_column(BigInteger, server_default=sql("0"))
    created_at: Mapped[datetime] = mapped_column(_tz, server_default=sql("now()"))

    __table_args__ = (
        CheckConstraint(_one_of("metric", METRICS), name="metric"),
        CheckConstraint(_one_of("index_kind", INDEX_KINDS), name="index_kind"),
        CheckConstraint("dim BETWEEN 1 AND 65536", name="dim"),
        CheckConstraint("ef_search BETWEEN 1 AND 4096", name="ef_search"),
        CheckConstraint("nprobe BETWEEN 1 AND 4096", name="nprobe"),
    )


class VectorItem(Base):
    """The latest version of one vector; a delete leaves a tombstone with a new seq."""

    __tablename__ = "vector_items"

    collection: Mapped[str] = mapped_column(
        Text, ForeignKey("vector_collections.name", ondelete="CASCADE")
    )
    id: Mapped[str] = mapped_column(Text)
    seq: Mapped[int] = mapped_column(BigInteger)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    """float32, little-endian; NULL for a tombstone."""
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=sql("'{}'::jsonb")
    )
    text: Mapped[str | None] = mapped_column(Text)
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=sql("false"))
    embedder: Mapped[str | None] = mapped_column(Text)
    embedder_version: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(_tz, server_default=sql("now()"))

    __table_args__ = (
        PrimaryKeyConstraint("collection", "id"),
        Index("uq_vector_items_seq", "collection", "seq", unique=True),
        Index(
            "ix_vector_items_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
    )
