"""VectorStore: collections and vectors in PostgreSQL, the truth every replica follows.

Each collection has a monotonically increasing `seq`: every upsert or delete takes the next
seqs under the collection row's lock, so a replica that applies the rows with a higher seq
than it has seen is exactly up to date.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Engine, and_, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert

from conveyor.errors import InvalidInput
from conveyor.filters import Where, where_clause
from conveyor.vector.embedders import Vectors
from conveyor.vector.schema import Collection, CreateCollection
from conveyor.vector.table import VectorCollection, VectorItem

_DETAILS = select(VectorItem.seq, VectorItem.id, VectorItem.meta, VectorItem.text).where(
    VectorItem.collection == bindparam("name"),
    VectorItem.seq == any_(bindparam("seqs", type_=ARRAY(BigInteger))),
)
_CATCH_UP = (
    select(VectorCollection.generation, VectorItem.id, VectorItem.seq, VectorItem.vector)
    .select_from(VectorCollection)
    .outerjoin(
        VectorItem,
        and_(
            VectorItem.collection == VectorCollection.name,
            VectorItem.seq > bindparam("seq", type_=BigInteger),
        ),
    )
    .where(VectorCollection.name == bindparam("name"))
    .order_by(VectorItem.seq)
)
"""Built once: constant SQL, so psycopg prepares it after a few uses."""


_SETTINGS = {"dim", "metric", "embedder", "index", "ef_search", "nprobe"}
"""What an existing collection must match for create_collection(exist_ok=True) to reuse it."""


@dataclass(frozen=True)
class Change:
    id: str
    seq: int
    vector: bytes | None


def _invalid(op: str, loc: tuple[Any, ...], msg: str) -> InvalidInput:
    return InvalidInput(op, [{"loc": loc, "msg": msg}])


def _collection(row: Any) -> Collection:
    return Collection(
        name=row.name,
        dim=row.dim,
        metric=row.metric,
        embedder=row.embedder,
        index=row.index_kind,
        last_seq=row.last_seq,
        ef_search=row.ef_search,
        nprobe=row.nprobe,
    )


class VectorStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    def create(self, request: CreateCollection, dim: int) -> Collection:
        """Create a collection; an existing one is returned only with exist_ok and the same
        settings (shape and search defaults)."""
        values = {
            "name": request.name,
            "dim": dim,
            "metric": request.metric,
            "embedder": request.embedder,
            "index_kind": request.index,
            "ef_search": request.ef_search,
            "nprobe": request.nprobe,
            "generation": uuid.uuid4().hex,
        }
        with self.engine.begin() as conn:
            row = conn.execute(
                insert(VectorCollection)
                .values(values)
                .on_conflict_do_nothing()
                .returning(*VectorCollection.__table__.columns)
            ).first()
        if row is not None:
            return _collection(row)
        existing = self.get("vector.create_collection", request.name)
        wanted = {"dim": dim, **request.model_dump(include=_SETTINGS - {"dim"})}
        other = [
            f"{key} {getattr(existing, key)!r} (not {wanted[key]!r})"
            for key in sorted(_SETTINGS)
            if getattr(existing, key) != wanted[key]
        ]
        if request.exist_ok and not other:
            return existing
        raise _invalid(
            "vector.create_collection",
            ("name",),
            f"collection {request.name!r} already exists"
            + (f" with {', '.join(other)}" if other else "; pass exist_ok=true to reuse it"),
        )

    def drop(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return bool(
                conn.execute(delete(VectorCollection).where(VectorCollection.name == name)).rowcount
            )

    def get(self, op: str, name: str) -> Collection:
        """The collection, or InvalidInput naming it."""
        with self._reads.connect() as conn:
            row = conn.execute(
                select(*VectorCollection.__table__.columns).where(VectorCollection.name == name)
            ).first()
        if row is None:
            raise _invalid(op, ("collection",), f"unknown collection {name!r}")
        return _collection(row)

    def names(self) -> list[str]:
        with self._reads.connect() as conn:
            return list(conn.execute(select(VectorCollection.name)).scalars())

    def head(self, name: str) -> tuple[str, int] | None:
        """The collection's generation and last seq, or None once it is dropped."""
        with self._reads.connect() as conn:
            row = conn.execute(
                select(VectorCollection.generation, VectorCollection.last_seq).where(
                    VectorCollection.name == name
                )
            ).first()
        return (row.generation, row.last_seq) if row else None

    def _take_seqs(self, conn: Any, op: str, name: str, count: int) -> int:
        """Lock the collection and reserve `count` seqs; returns the first."""
        last = conn.execute(
            update(VectorCollection)
            .where(VectorCollection.name == name)
            .values(last_seq=VectorCollection.last_seq + count)
            .returning(VectorCollection.last_seq)
        ).scalar_one_or_none()
        if last is None:
            raise _invalid(op, ("collection",), f"unknown collection {name!r}")
        return int(last) - count + 1

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: Vectors,
        metadata: Sequence[dict[str, Any]],
        texts: Sequence[str | None],
        made_by: Sequence[tuple[str | None, str | None]],
    ) -> int:
        """Write a batch atomically (all or nothing); returns the collection's new last seq."""
        with self.engine.begin() as conn:
            first = self._take_seqs(conn, "vector.upsert", name, len(ids))
            rows = [
                {
                    "collection": name,
                    "id": item_id,
                    "seq": first + i,
                    "vector": np.ascontiguousarray(vectors[i], dtype="<f4").tobytes(),
                    "metadata": metadata[i],
                    "text": texts[i],
                    "deleted": False,
                    "embedder": made_by[i][0],
                    "embedder_version": made_by[i][1],
                }
                for i, item_id in enumerate(ids)
            ]
            statement = insert(VectorItem).values(rows)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["collection", "id"],
                    set_={
                        "seq": statement.excluded.seq,
                        "vector": statement.excluded.vector,
                        "metadata": statement.excluded.metadata,
                        "text": statement.excluded.text,
                        "deleted": False,
                        "embedder": statement.excluded.embedder,
                        "embedder_version": statement.excluded.embedder_version,
                        "updated_at": func.now(),
                    },
                )
            )
        return first + len(ids) - 1

    def delete(self, name: str, ids: Sequence[str]) -> tuple[int, int]:
        """Tombstone the live items among `ids`; returns (how many, the new last seq)."""
        with self.engine.begin() as conn:
            live = sorted(
                conn.execute(
                    select(VectorItem.id).where(
                        VectorItem.collection == name,
                        VectorItem.id.in_(list(ids)),
                        VectorItem.deleted.is_(False),
                    )
                ).scalars()
            )
            first = self._take_seqs(conn, "vector.delete", name, len(live))
            for i, item_id in enumerate(live):
                conn.execute(
                    update(VectorItem)
                    .where(VectorItem.collection == name, VectorItem.id == item_id)
                    .values(deleted=True, vector=None, seq=first + i, updated_at=func.now())
                )
        return len(live), first + len(live) - 1

    def catch_up(self, name: str, seq: int) -> tuple[str, list[Change]] | None:
        """The collection's generation and the rows written after `seq`, in one query."""
        with self._reads.connect() as conn:
            rows = conn.execute(_CATCH_UP, {"name": name, "seq": seq}).all()
        if not rows:
            return None
        changes = [Change(id=r.id, seq=r.seq, vector=r.vector) for r in rows if r.id is not None]
        return rows[0].generation, changes

    def changes_since(self, name: str, seq: int) -> list[Change]:
        """Every row written after `seq`, in seq order."""
        with self._reads.connect() as conn:
            rows = conn.execute(
                select(VectorItem.id, VectorItem.seq, VectorItem.vector)
                .where(VectorItem.collection == name, VectorItem.seq > seq)
                .order_by(VectorItem.seq)
            ).all()
        return [Change(id=r.id, seq=r.seq, vector=r.vector) for r in rows]

    def matching_seqs(self, name: str, where: Where, limit: int) -> list[int]:
        """Seqs (replica labels) of live items whose metadata matches, at most `limit`."""
        with self._reads.connect() as conn:
            return list(
                conn.execute(
                    select(VectorItem.seq)
                    .where(
                        VectorItem.collection == name,
                        VectorItem.deleted.is_(False),
                        where_clause(where, VectorItem.meta),
                    )
                    .limit(limit)
                ).scalars()
            )

    def details(self, name: str, seqs: Sequence[int]) -> dict[int, Any]:
        """id, metadata and text of the items now at these seqs."""
        with self._reads.connect() as conn:
            rows = conn.execute(_DETAILS, {"name": name, "seqs": list(seqs)}).all()
        return {r.seq: r for r in rows}

    def counts(self, name: str) -> tuple[int, int]:
        """(live items, tombstones)."""
        with self._reads.connect() as conn:
            live, dead = conn.execute(
                select(
                    func.count().filter(VectorItem.deleted.is_(False)),
                    func.count().filter(VectorItem.deleted.is_(True)),
                ).where(VectorItem.collection == name)
            ).one()
        return int(live), int(dead)
