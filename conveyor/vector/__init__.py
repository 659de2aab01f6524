"""Vector search: collections of embeddings in faiss replicas, PostgreSQL as the truth.

Plain Python (`VectorService`, `VectorStore`, `Replica`, embedders); the `vector.*` agents in
`conveyor.vector.agents` bind it to the vector pool, and `Client.vector` calls them. Nothing
here imports faiss until a replica is first built, which in a worker is after the fork.
"""

from __future__ import annotations

from conveyor.blobs import blob_store_for
from conveyor.config import Settings
from conveyor.models.db import engine_for
from conveyor.services import cache_client, per_process
from conveyor.vector.embedders import Embedder, HashingEmbedder, get_embedder
from conveyor.vector.schema import (
    Collection,
    CreateCollection,
    Delete,
    Deleted,
    DropCollection,
    Dropped,
    Match,
    NewVector,
    Query,
    Search,
    SearchResult,
    Stats,
    StatsRequest,
    Upsert,
    Upserted,
)
from conveyor.vector.service import EmbeddingCache, VectorService
from conveyor.vector.store import VectorStore

__all__ = [
    "Collection",
    "CreateCollection",
    "Delete",
    "Deleted",
    "DropCollection",
    "Dropped",
    "Embedder",
    "EmbeddingCache",
    "HashingEmbedder",
    "Match",
    "NewVector",
    "Query",
    "Search",
    "SearchResult",
    "Stats",
    "StatsRequest",
    "Upsert",
    "Upserted",
    "VectorService",
    "VectorStore",
    "get_embedder",
    "service_for",
]


def service_for(settings: Settings) -> VectorService:
    """This process's VectorService for `settings` (services already resolved)."""

    def build() -> VectorService:
        assert settings.database_url is not None
        return VectorService(
            VectorStore(engine_for(settings.database_url)),
            EmbeddingCache(cache_client(settings.cache_url, settings.tls)),
            settings.data_dir / "vector",
            blob_store_for(settings),
        )

    return per_process("vector", settings, build)
