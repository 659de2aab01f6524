"""VectorService: the vector agents' logic over VectorStore, replicas and embedders.

Plain Python with no Celery in it; `conveyor.vector.agents` binds it to the vector pool.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis

from conveyor.blobs import BlobStore
from conveyor.errors import ConveyorError, InvalidInput, TransientError
from conveyor.vector.embedders import Embedder, Vectors, get_embedder
from conveyor.vector.replica import Replica
from conveyor.vector.schema import (
    Collection,
    CreateCollection,
    Delete,
    Deleted,
    DropCollection,
    Dropped,
    Search,
    SearchResult,
    SnapshotRequest,
    Snapshotted,
    Stats,
    StatsRequest,
    Upsert,
    Upserted,
    float32s,
    matrix_rows,
)
from conveyor.vector.snapshot import load_snapshot, write_snapshot
from conveyor.vector.store import VectorStore

log = logging.getLogger(__name__)
EMBEDDING_TTL = 7 * 86400


class EmbeddingCache:
    """Embeddings in Redis, keyed by embedder, version and text hash; errors mean a miss."""

    def __init__(self, client: redis.Redis[bytes] | None) -> None:
        self.client = client

    @staticmethod
    def _key(embedder: Embedder, text: str) -> str:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return f"conveyor:emb:{embedder.name}:{embedder.version}:{digest}"

    def embed(self, embedder: Embedder, texts: Sequence[str]) -> Vectors:
        """Embed texts, reading and filling the cache."""
        out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
        keys = [self._key(embedder, t) for t in texts]
        cached: list[bytes | None] = [None] * len(texts)
        if self.client is not None:
            try:
                cached = self.client.mget(keys)
            except redis.RedisError as exc:
                log.warning("embedding cache unavailable: %s", exc)
        missing = [i for i, raw in enumerate(cached) if raw is None]
        for i, raw in enumerate(cached):
            if raw is not None:
                out[i] = np.frombuffer(raw, dtype="<f4")
        if missing:
            out[missing] = embedder.embed([texts[i] for i in missing])
            if self.client is not None:
                try:
                    with self.client.pipeline(transaction=False) as pipe:
                        for i in missing:
                            pipe.set(keys[i], out[i].astype("<f4").tobytes(), ex=EMBEDDING_TTL)
                        pipe.execute()
                except redis.RedisError as exc:
                    log.warning("embedding cache unavailable: %s", exc)
        return out


def _kept(keep: Callable[[int], bool], labels: list[list[int]], *columns: list[list[Any]]) -> Any:
    """The label rows, and each column of values beside them, without the hits whose label
    `keep` refuses (a missing match, or an item deleted since the replica answered)."""
    masks = [[keep(label) for label in row] for row in labels]
    return [
        [
            [value for value, wanted in zip(row, mask, strict=True) if wanted]
            for row, mask in zip(column, masks, strict=True)
        ]
        for column in (labels, *columns)
    ]


def _invalid(op: str, loc: tuple[Any, ...], msg: str) -> InvalidInput:
    return InvalidInput(op, [{"loc": loc, "msg": msg}])


class VectorService:
    def __init__(
        self,
        store: VectorStore,
        cache: EmbeddingCache | None = None,
        snapshot_dir: Path | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.store = store
        self.cache = cache or EmbeddingCache(None)
        self.snapshot_dir = snapshot_dir
        self.blobs = blobs
        self._replicas: dict[str, Replica] = {}
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()

    def _embedder(self, op: str, name: str) -> Embedder:
        try:
            return get_embedder(name)
        except ConveyorError as exc:
            raise _invalid(op, ("embedder",), str(exc)) from None

    def create_collection(self, request: CreateCollection) -> Collection:
        embedder = self._embedder("vector.create_collection", request.embedder)
        return self.store.create(request, request.dim or embedder.dim)

    def drop_collection(self, request: DropCollection) -> Dropped:
        dropped = self.store.drop(request.name)
        if not dropped and not request.missing_ok:
            raise _invalid(
                "vector.drop_collection", ("name",), f"unknown collection {request.name!r}"
            )
        with self._lock:
            self._replicas.pop(request.name, None)
            self._collections.pop(request.name, None)
        return Dropped(name=request.name, dropped=dropped)

    def _vectors(
        self, op: str, field: str, collection: Collection, vectors: list[Any], texts: list[Any]
    ) -> Vectors:
        """Given vectors checked against the dim, and the texts without one embedded."""
        out = np.zeros((len(vectors), collection.dim), dtype=np.float32)
        to_embed = []
        for i, vector in enumerate(vectors):
            if vector is None:
                to_embed.append(i)
            elif len(vector) != collection.dim:
                raise _invalid(
                    op,
                    (field, i, "vector"),
                    f"has {len(vector)} values; collection {collection.name!r} has dim "
                    f"{collection.dim}",
                )
            else:
                out[i] = vector
        if to_embed:
            embedder = self._embedder(op, collection.embedder)
            if embedder.dim != collection.dim:
                raise _invalid(
                    op,
                    (field, to_embed[0], "text"),
                    f"embedder {embedder.name!r} makes {embedder.dim} values; collection "
                    f"{collection.name!r} has dim {collection.dim}: send vectors",
                )
            out[to_embed] = self.cache.embed(embedder, [texts[i] for i in to_embed])
        return out

    def upsert(self, request: Upsert) -> Upserted:
        collection = self.store.get("vector.upsert", request.collection)
        items = request.items
        given = [i.array() for i in items]
        texts = [i.text for i in items]
        vectors = self._vectors("vector.upsert", "items", collection, given, texts)
        embedder = get_embedder(collection.embedder) if any(v is None for v in given) else None
        made_by = [
            (embedder.name, embedder.version) if v is None and embedder else (None, None)
            for v in given
        ]
        seq = self.store.upsert(
            collection.name,
            [i.id for i in items],
            vectors,
            [i.metadata for i in items],
            [i.text for i in items],
            made_by,
        )
        return Upserted(collection=collection.name, count=len(items), seq=seq)

    def delete(self, request: Delete) -> Deleted:
        self.store.get("vector.delete", request.collection)
        count, seq = self.store.delete(request.collection, request.ids)
        return Deleted(collection=request.collection, deleted=count, seq=seq)

    def replica(self, op: str, name: str) -> Replica:
        """This process's replica of the collection, caught up to its latest seq.

        One query checks the generation and reads the new rows; a replica of a dropped and
        re-created collection is replaced.
        """
        with self._lock:
            replica = self._replicas.get(name)
        if replica is None:
            replica = self._replace(op, name)
        found = self.store.catch_up(name, replica.applied)
        if found is None:
            raise _invalid(op, ("collection",), f"unknown collection {name!r}")
        generation, changes = found
        if generation != replica.generation:
            replica = self._replace(op, name)
            changes = self.store.changes_since(name, replica.applied)
        with replica.lock:
            replica.apply([c for c in changes if c.seq > replica.applied])
        return replica

    def _replace(self, op: str, name: str) -> Replica:
        """A replica of the collection's current generation (from a snapshot if there is one)."""
        collection = self.store.get(op, name)
        generation = self.store.head(name)
        if generation is None:
            raise _invalid(op, ("collection",), f"unknown collection {name!r}")
        with self._lock:
            replica = self._replicas.get(name)
            if replica is None or replica.generation != generation[0]:
                replica = self._load(op, name, generation[0])
                self._replicas[name] = replica
                self._collections[name] = collection
        return replica

    def _load(self, op: str, name: str, generation: str) -> Replica:
        """The newest snapshot of this generation, or an empty replica."""
        if self.snapshot_dir is not None:
            loaded = load_snapshot(self.snapshot_dir, name, generation)
            if loaded is not None:
                log.info("collection %s: loaded snapshot at seq %d", name, loaded.applied)
                return loaded
        collection = self.store.get(op, name)
        return Replica(generation, collection.dim, collection.metric, collection.index)

    def warm_up(self) -> list[str]:
        """Load and catch up every collection now, so first searches are fast."""
        names = self.store.names()
        for name in names:
            self.replica("vector.warm_up", name)
        return names

    def snapshot(self, request: SnapshotRequest) -> Snapshotted:
        """Write this worker's replica of the collection to the snapshot directory."""
        if self.snapshot_dir is None:
            raise _invalid("vector.snapshot", ("collection",), "no snapshot directory is set")
        replica = self.replica("vector.snapshot", request.collection)
        started = time.perf_counter()
        with replica.lock:
            manifest = write_snapshot(self.snapshot_dir, request.collection, replica)
            seq, count = replica.applied, replica.size
        index_file = manifest.with_suffix(".faiss")
        return Snapshotted(
            collection=request.collection,
            seq=seq,
            vectors=count,
            path=str(index_file),
            bytes=index_file.stat().st_size,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _queries(self, collection: Collection, request: Search) -> Vectors:
        if request.matrix is None:
            given, texts = [q.array() for q in request.queries], [q.text for q in request.queries]
            return self._vectors("vector.search", "queries", collection, given, texts)
        if request.matrix.dim != collection.dim:
            raise _invalid(
                "vector.search",
                ("matrix", "dim"),
                f"is {request.matrix.dim}; collection {collection.name!r} has dim {collection.dim}",
            )
        if request.matrix.blob is None:
            return request.matrix.array()
        return self._blob_matrix(request.matrix.blob, collection.dim)

    def _blob_matrix(self, key: str, dim: int) -> Vectors:
        """The query rows a client left beside its message (conveyor.blobs)."""
        if self.blobs is None:
            raise _invalid(
                "vector.search",
                ("matrix", "blob"),
                "this worker's broker is not Redis, so it cannot read blobs: send b64",
            )
        try:
            raw = self.blobs.get(key)
        except redis.RedisError as exc:
            raise TransientError(f"broker unreachable reading the query matrix: {exc}") from exc
        if raw is None:
            raise _invalid(
                "vector.search",
                ("matrix", "blob"),
                f"{key} is gone: it expired ({self.blobs.ttl} s, CONVEYOR_BLOB_TTL) before a "
                "worker started the run, or the run already finished; submit the search again",
            )
        try:
            return matrix_rows(float32s(raw), dim)
        except ValueError as exc:
            raise _invalid("vector.search", ("matrix", "blob"), str(exc)) from None

    def search(self, request: Search) -> SearchResult:
        replica = self.replica("vector.search", request.collection)
        with self._lock:
            collection = self._collections[request.collection]
        queries = self._queries(collection, request)
        if request.min_seq is not None and replica.applied < request.min_seq:
            raise TransientError(
                f"replica of {collection.name!r} is at seq {replica.applied}, "
                f"below min_seq {request.min_seq}"
            )
        allowed = None
        if request.where:
            allowed = self.store.matching_seqs(collection.name, request.where, 10_000_000)
        include = set(request.include)
        with replica.lock:
            hits = replica.search(
                queries,
                request.k,
                allowed,
                request.ef_search or collection.ef_search,
                request.nprobe or collection.nprobe,
            )
            seq = replica.applied
            labels, scores = hits.labels.tolist(), hits.score_lists()
            if not hits.complete:
                labels, scores = _kept(lambda label: label >= 0, labels, scores)
            id_of = replica.ids
            ids = [[id_of[label] for label in row] for row in labels]
            found = {label for row in labels for label in row} if include else set()
            vectors = (
                {label: replica.live_vectors([label])[0].tolist() for label in found}
                if "vector" in include
                else {}
            )
        details = {}
        if include & {"metadata", "text"}:
            details = self.store.details(collection.name, list(found))
            if len(details) < len(found):
                labels, scores, ids = _kept(details.__contains__, labels, scores, ids)

        def column(pick: Callable[[int], Any]) -> list[list[Any]]:
            return [[pick(label) for label in row] for row in labels]

        # Built from the replica's and the store's own values: not validated hit by hit again.
        return SearchResult.model_construct(
            collection=collection.name,
            seq=seq,
            ids=ids,
            scores=scores,
            metadata=column(lambda x: details[x].metadata) if "metadata" in include else None,
            texts=column(lambda x: details[x].text) if "text" in include else None,
            vectors=column(vectors.__getitem__) if "vector" in include else None,
        )

    def stats(self, request: StatsRequest) -> Stats:
        collection = self.store.get("vector.stats", request.collection)
        live, dead = self.store.counts(collection.name)
        replica = self.replica("vector.stats", collection.name)
        return Stats(
            collection=collection.model_copy(update={"items": live}),
            items=live,
            tombstones=dead,
            replica_seq=replica.applied,
            replica_kind=replica.built,
            replica_vectors=replica.size,
        )
