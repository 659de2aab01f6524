"""Hybrid memory search: full-text and vector rankings fused by reciprocal rank fusion.

Items remembered with `embed=True` are also written, with the `hashing` embedder, to a
vector collection of their namespace (`memory-<hash of the namespace>`, cosine, auto index),
under the item's id. A hybrid search takes the `candidates` best items of each ranking (the
vector ranking is filtered by the same session, metadata and expiry rules afterwards) and
scores each item by the sum over rankings of 1 / (rrf_k + rank), rank counted from 1:
rrf_k = 60 is the usual constant; smaller values favour the top of each list more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from conveyor.vector import CreateCollection, Query, Search, VectorService
from conveyor.vector.embedders import get_embedder

EMBEDDER = "hashing"


def collection_for(namespace: str) -> str:
    digest = hashlib.sha256(namespace.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"memory-{digest}"


def fuse(rankings: Sequence[Sequence[str]], rrf_k: int) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ranked id lists, best first (ties: first seen first)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item_id in enumerate(ranking, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])


class MemoryVectors:
    """The vector side of memory: index, unindex and rank items of a namespace."""

    def __init__(self, service: VectorService) -> None:
        self.service = service

    def index(self, namespace: str, ids: Sequence[str], contents: Sequence[str]) -> None:
        if not ids:
            return
        collection = collection_for(namespace)
        self.service.create_collection(
            CreateCollection(name=collection, embedder=EMBEDDER, exist_ok=True)
        )
        embedder = get_embedder(EMBEDDER)
        vectors = self.service.cache.embed(embedder, contents)
        self.service.store.upsert(
            collection,
            ids,
            vectors,
            [{} for _ in ids],
            [None for _ in ids],
            [(embedder.name, embedder.version) for _ in ids],
        )

    def unindex(self, namespace: str, ids: Sequence[str]) -> None:
        collection = collection_for(namespace)
        if ids and self.service.store.head(collection) is not None:
            self.service.store.delete(collection, ids)

    def nearest(self, namespace: str, query: str, count: int) -> list[str]:
        """Ids of the `count` items nearest to the query text; none if nothing is indexed."""
        collection = collection_for(namespace)
        if self.service.store.head(collection) is None:
            return []
        result = self.service.search(
            Search(collection=collection, queries=[Query(text=query)], k=count, include=[])
        )
        return result.ids[0]
