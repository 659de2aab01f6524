"""MemoryStore: remember, recall, search, forget, stats and sweep, on PostgreSQL.

Plain Python with no Celery in it; `conveyor.memory.agents` binds it to the memory pool.
Every query is scoped by namespace with bound parameters, and no expired item is ever
returned, swept or not.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Integer,
    Select,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert

from conveyor.errors import InvalidInput
from conveyor.filters import where_clause
from conveyor.memory.cache import RecallCache
from conveyor.memory.hybrid import MemoryVectors, fuse
from conveyor.memory.schema import (
    ForgetRequest,
    Forgotten,
    Hit,
    Item,
    MemoryLimits,
    RecallRequest,
    Remembered,
    RememberRequest,
    RememberResult,
    Role,
    SearchRequest,
    SearchResult,
    Stats,
    StatsRequest,
    SweepRequest,
    Swept,
    Window,
)
from conveyor.memory.table import FTS_CONFIG, MemoryItem, MemorySession
from conveyor.memory.text import content_hash, count_tokens, escape_nul, unescape_nul

_live = or_(MemoryItem.expires_at.is_(None), MemoryItem.expires_at > func.now())
_COPY = (
    "COPY memory_items (id, namespace, session, seq, role, content, escaped, metadata, "
    "content_hash, tokens, created_at, expires_at) FROM STDIN"
)
_item_columns = [c for c in MemoryItem.__table__.columns if c.name != "search"]


def _recall_statement() -> Select[Any]:
    """One statement for every recall, built once: the bounds are parameters, a bound left
    out (NULL) does not restrict."""
    since = bindparam("since", type_=MemoryItem.created_at.type)
    budget = bindparam("max_tokens", type_=Integer)
    newest = (
        select(
            *_item_columns,
            func.sum(MemoryItem.tokens).over(order_by=MemoryItem.seq.desc()).label("running"),
        )
        .where(
            MemoryItem.namespace == bindparam("namespace"),
            MemoryItem.session == bindparam("session"),
            _live,
            or_(since.is_(None), MemoryItem.created_at >= since),
        )
        .order_by(MemoryItem.seq.desc())
        .limit(bindparam("last", type_=Integer))
        .subquery()
    )
    return (
        select(newest)
        .where(or_(budget.is_(None), newest.c.running <= budget))
        .order_by(newest.c.seq)
    )


_RECALL = _recall_statement()


def _item(row: Any) -> Item:
    """An Item from a row, unvalidated: the database's constraints already hold."""
    return Item.model_construct(
        id=str(row.id),
        namespace=row.namespace,
        session=row.session,
        seq=row.seq,
        role=Role(row.role),
        content=unescape_nul(row.content, row.escaped),
        metadata=row._mapping["metadata"],
        tokens=row.tokens,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


class MemoryStore:
    def __init__(
        self,
        engine: Engine,
        cache: RecallCache | None = None,
        limits: MemoryLimits | None = None,
        vectors: MemoryVectors | None = None,
    ) -> None:
        self.engine = engine
        self.vectors = vectors
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.cache = cache or RecallCache(None)
        self.limits = limits or MemoryLimits()

    def remember(self, request: RememberRequest) -> RememberResult:
        """Add items to a session in one transaction; repeated content returns the first item.

        The session's row in memory_sessions is locked for the transaction, so concurrent
        writers of one session get consecutive seqs and see each other's items for dedup.
        """
        ns, session = request.namespace, request.session
        hashes = [content_hash(item.content) for item in request.items]
        with self.engine.begin() as conn:
            last_seq, now = conn.execute(
                insert(MemorySession)
                .values(namespace=ns, session=session)
                .on_conflict_do_update(
                    index_elements=["namespace", "session"],
                    set_={"last_seq": MemorySession.last_seq},
                )
                .returning(MemorySession.last_seq, func.now())
            ).one()
            known: dict[str, Remembered] = {}
            if request.dedup:
                known = self._live_duplicates(conn, ns, session, set(hashes))
            results: list[Remembered] = []
            rows: list[tuple[Any, ...]] = []
            for item, digest in zip(request.items, hashes, strict=True):
                if request.dedup and digest in known:
                    results.append(known[digest].model_copy(update={"deduped": True}))
                    continue
                last_seq += 1
                stored, escaped = escape_nul(item.content)
                expires = now + timedelta(seconds=item.ttl_seconds) if item.ttl_seconds else None
                new = Remembered(id=str(uuid.uuid4()), seq=last_seq, deduped=False)
                rows.append(
                    (new.id, ns, session, new.seq, item.role.value, stored, escaped,
                     json.dumps(item.metadata), digest, count_tokens(item.content), now, expires)
                )  # fmt: skip
                known[digest] = new
                results.append(new)
            if rows:
                with conn.connection.dbapi_connection.cursor() as cur, cur.copy(_COPY) as copy:  # type: ignore[union-attr]
                    for row in rows:
                        copy.write_row(row)
                conn.execute(
                    update(MemorySession)
                    .where(MemorySession.namespace == ns, MemorySession.session == session)
                    .values(last_seq=last_seq)
                )
        if rows:
            self.cache.invalidate_session(ns, session)
            if request.embed:
                self._vectors("memory.remember").index(
                    ns, [row[0] for row in rows], [unescape_nul(row[5], row[6]) for row in rows]
                )
        return RememberResult(namespace=ns, session=session, items=results)

    def _vectors(self, op: str) -> MemoryVectors:
        if self.vectors is None:
            raise InvalidInput(op, [{"loc": ("embed",), "msg": "no vector service here"}])
        return self.vectors

    @staticmethod
    def _live_duplicates(
        conn: Any, ns: str, session: str, hashes: set[str]
    ) -> dict[str, Remembered]:
        """Live items of the session with these hashes; expired ones are deleted to be redone."""
        found = conn.execute(
            select(
                MemoryItem.id,
                MemoryItem.seq,
                MemoryItem.content_hash,
                (MemoryItem.expires_at <= func.now()).label("expired"),
            )
            .where(
                MemoryItem.namespace == ns,
                MemoryItem.session == session,
                MemoryItem.content_hash.in_(hashes),
            )
            .order_by(MemoryItem.seq)
        ).all()
        expired = [row.id for row in found if row.expired]
        if expired:
            conn.execute(delete(MemoryItem).where(MemoryItem.id.in_(expired)))
        live: dict[str, Remembered] = {}
        for row in found:
            if not row.expired:
                live.setdefault(
                    row.content_hash, Remembered(id=str(row.id), seq=row.seq, deduped=True)
                )
        return live

    def recall(self, request: RecallRequest) -> Window:
        """The newest items within every bound, returned oldest first."""
        params = request.model_dump(mode="json", exclude={"namespace", "session"})
        key, cached = self.cache.lookup(request.namespace, request.session, params)
        if cached is not None:
            return Window.model_validate({**cached, "cached": True})
        bounds = {
            "namespace": request.namespace,
            "session": request.session,
            "last": request.last or self.limits.max_window,
            "since": request.since,
            "max_tokens": request.max_tokens,
        }
        with self._reads.connect() as conn:
            items = [_item(row) for row in conn.execute(_RECALL, bounds)]
        result = Window(
            namespace=request.namespace,
            session=request.session,
            items=items,
            tokens=sum(i.tokens for i in items),
        )
        expiries = [i.expires_at for i in items if i.expires_at is not None]
        self.cache.put(key, result.model_dump(mode="json"), min(expiries, default=None))
        return result

    def search(self, request: SearchRequest) -> SearchResult:
        """Full-text (or hybrid) search in a namespace, best first, with metadata filters."""
        if request.mode == "hybrid":
            return self._hybrid(request)
        query = func.websearch_to_tsquery(text(f"'{FTS_CONFIG}'::regconfig"), request.query)
        rank = func.ts_rank_cd(MemoryItem.search, query).label("rank")
        statement = (
            select(*_item_columns, rank)
            .where(self._scope(request), MemoryItem.search.op("@@")(query))
            .order_by(rank.desc(), MemoryItem.created_at.desc(), MemoryItem.seq.desc())
            .limit(request.limit)
        )
        with self._reads.connect() as conn:
            hits = [
                Hit(item=_item(row), rank=row.rank, text_rank=n)
                for n, row in enumerate(conn.execute(statement), start=1)
            ]
        return SearchResult(namespace=request.namespace, hits=hits)

    @staticmethod
    def _scope(request: SearchRequest) -> ColumnElement[bool]:
        """Live items of the namespace (and session) that pass the metadata filters."""
        conditions = [
            MemoryItem.namespace == request.namespace,
            _live,
            where_clause(request.where, MemoryItem.meta),
        ]
        if request.session is not None:
            conditions.append(MemoryItem.session == request.session)
        return and_(*conditions)

    def _hybrid(self, request: SearchRequest) -> SearchResult:
        pool = request.model_copy(update={"mode": "text", "limit": request.candidates})
        by_text = [hit.item.id for hit in self.search(pool).hits]
        nearest = self._vectors("memory.search").nearest(
            request.namespace, request.query, request.candidates * 4
        )
        statement = select(*_item_columns).where(
            self._scope(request), MemoryItem.id.in_(_valid_uuids(nearest + by_text))
        )
        with self._reads.connect() as conn:
            items = {str(row.id): _item(row) for row in conn.execute(statement)}
        by_vector = [i for i in nearest if i in items][: request.candidates]
        text_rank = {item_id: n for n, item_id in enumerate(by_text, start=1)}
        vector_rank = {item_id: n for n, item_id in enumerate(by_vector, start=1)}
        hits = [
            Hit(
                item=items[item_id],
                rank=score,
                text_rank=text_rank.get(item_id),
                vector_rank=vector_rank.get(item_id),
            )
            for item_id, score in fuse([by_text, by_vector], request.rrf_k)[: request.limit]
            if item_id in items
        ]
        return SearchResult(namespace=request.namespace, hits=hits)

    def forget(self, request: ForgetRequest) -> Forgotten:
        """Hard-delete items of one namespace; returns how many were deleted."""
        ns = request.namespace
        statement = delete(MemoryItem).where(MemoryItem.namespace == ns).returning(MemoryItem.id)
        if request.ids is not None:
            statement = statement.where(MemoryItem.id.in_(_valid_uuids(request.ids)))
        if request.session is not None:
            statement = statement.where(MemoryItem.session == request.session)
        if request.where is not None:
            statement = statement.where(where_clause(request.where, MemoryItem.meta))
        with self.engine.begin() as conn:
            gone = [str(i) for i in conn.execute(statement).scalars()]
            deleted = len(gone)
            sessions = delete(MemorySession).where(MemorySession.namespace == ns)
            if request.everything:
                conn.execute(sessions)
            elif request.session is not None and request.ids is None and request.where is None:
                conn.execute(sessions.where(MemorySession.session == request.session))
        if deleted:
            self.cache.invalidate_namespace(ns)
            if self.vectors is not None:
                self.vectors.unindex(ns, gone)
        return Forgotten(namespace=ns, deleted=deleted)

    def stats(self, request: StatsRequest) -> Stats:
        """Sessions, items, bytes and the oldest and newest live item of a namespace."""
        statement = select(
            func.count(func.distinct(MemoryItem.session)),
            func.count(),
            func.coalesce(func.sum(func.octet_length(MemoryItem.content)), 0),
            func.min(MemoryItem.created_at),
            func.max(MemoryItem.created_at),
        ).where(MemoryItem.namespace == request.namespace, _live)
        with self._reads.connect() as conn:
            sessions, items, size, oldest, newest = conn.execute(statement).one()
        return Stats(
            namespace=request.namespace,
            sessions=sessions,
            items=items,
            bytes=int(size),
            oldest=oldest,
            newest=newest,
        )

    def sweep_expired(self, request: SweepRequest | None = None) -> Swept:
        """Delete expired items in bounded batches, each in its own short transaction."""
        request = request or SweepRequest()
        doomed = (
            select(MemoryItem.id)
            .where(MemoryItem.expires_at <= func.now())
            .order_by(MemoryItem.expires_at)
            .limit(request.batch_size)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        total = batches = 0
        while batches < request.max_batches:
            with self.engine.begin() as conn:
                gone = conn.execute(
                    delete(MemoryItem)
                    .where(MemoryItem.id.in_(doomed))
                    .returning(MemoryItem.namespace, MemoryItem.id)
                ).all()
            deleted = len(gone)
            if self.vectors is not None:
                for ns in {row.namespace for row in gone}:
                    self.vectors.unindex(ns, [str(r.id) for r in gone if r.namespace == ns])
            batches += 1
            total += deleted
            if deleted < request.batch_size:
                break
        return Swept(deleted=total, batches=batches)


def _valid_uuids(ids: Sequence[str]) -> list[str]:
    """Ids that can be item ids; anything else matches nothing rather than failing."""
    valid = []
    for value in ids:
        try:
            valid.append(str(uuid.UUID(value)))
        except ValueError:
            continue
    return valid
