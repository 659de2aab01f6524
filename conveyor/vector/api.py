"""`Client.vector`: the vector agents as typed Python calls.

Each call runs its `vector.*` agent and returns the typed result; `.submit(...)` on any of
them (`client.vector.search.submit(...)`) returns a `RunHandle` at once instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from conveyor.blobs import BLOB_FROM_BYTES, BlobStore, blob_store_for
from conveyor.errors import InvalidInput
from conveyor.facade import Facade, Request, operation
from conveyor.vector import agents
from conveyor.vector.schema import check_finite, encode_vector, matrix_rows

Queries = Sequence[str | Sequence[float]] | npt.NDArray[Any]
"""Texts, vectors, or a 2-D array of vectors (one row per query)."""


def _matrix(queries: Queries) -> npt.NDArray[np.float32] | None:
    """The queries as one 2-D float32 array, when they are vectors of one length."""
    if isinstance(queries, np.ndarray) or not any(isinstance(q, str) for q in queries):
        try:
            matrix = np.asarray(queries, dtype="<f4")
        except ValueError:
            return None
        if matrix.ndim == 2 and matrix.size:
            return matrix
    return None


def _queries(queries: Queries) -> dict[str, Any]:
    """Texts one by one; vectors as one base64 matrix when they form one (rows of one length)."""
    matrix = _matrix(queries)
    if matrix is not None:
        return {"matrix": {"dim": matrix.shape[1], "b64": encode_vector(matrix)}}
    return {
        "queries": [
            {"text": q} if isinstance(q, str) else {"vector_b64": encode_vector(q)} for q in queries
        ]
    }


def _item(item: dict[str, Any]) -> dict[str, Any]:
    """An item with its vector sent as base64 float32 (smaller, faster than a JSON list)."""
    if item.get("vector") is None:
        return item
    rest = {k: v for k, v in item.items() if k != "vector"}
    return {**rest, "vector_b64": encode_vector(item["vector"])}


class VectorAPI(Facade):
    """Vector search on a client. Vectors travel as base64 float32 (`vector_b64`); a plain
    Celery client may send JSON lists (`vector`) instead."""

    timeout: float | None = 120.0

    @cached_property
    def _blobs(self) -> BlobStore | None:
        return blob_store_for(self.sender.settings)

    def _blob_matrix(self, queries: Queries) -> tuple[dict[str, Any], str] | None:
        """A batch of 64 KiB or more, checked here and left in the broker's Redis beside
        its message (conveyor.blobs): the message then carries only the key."""
        matrix = _matrix(queries)
        if matrix is None or matrix.nbytes < BLOB_FROM_BYTES or self._blobs is None:
            return None
        try:
            check_finite(matrix)
            matrix_rows(matrix.reshape(-1), matrix.shape[1])
        except ValueError as exc:
            raise InvalidInput("vector.search", [{"loc": ("matrix",), "msg": str(exc)}]) from None
        key = self._blobs.put(np.ascontiguousarray(matrix, dtype="<f4").tobytes())
        return {"matrix": {"dim": matrix.shape[1], "blob": key}}, key

    @operation(agents.create_collection)
    def create_collection(
        self,
        name: str,
        *,
        embedder: str = "hashing",
        dim: int | None = None,
        metric: str = "cosine",
        index: str = "auto",
        exist_ok: bool = False,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> dict[str, Any]:
        """A collection; `dim` defaults to the embedder's, `index` is auto|flat|hnsw|ivf;
        `ef_search` (auto, hnsw) and `nprobe` (ivf) set the default breadth of its searches."""
        payload: dict[str, Any] = {
            "name": name,
            "embedder": embedder,
            "dim": dim,
            "metric": metric,
            "index": index,
            "exist_ok": exist_ok,
        }
        return payload | _given(ef_search=ef_search, nprobe=nprobe)

    @operation(agents.drop_collection)
    def drop_collection(self, name: str, *, missing_ok: bool = False) -> dict[str, Any]:
        return {"name": name, "missing_ok": missing_ok}

    @operation(agents.upsert)
    def upsert(self, collection: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Write items `{"id", "vector" and/or "text", "metadata"}`, all or none."""
        return {"collection": collection, "items": [_item(i) for i in items]}

    @operation(agents.delete)
    def delete(self, collection: str, ids: list[str]) -> dict[str, Any]:
        return {"collection": collection, "ids": ids}

    @operation(agents.search)
    def search(
        self,
        collection: str,
        queries: Queries,
        *,
        k: int = 10,
        where: dict[str, Any] | None = None,
        min_seq: int | None = None,
        include: Sequence[str] = ("metadata", "text"),
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> Request:
        """k best matches per query (a text or a vector); `min_seq` reads your writes;
        `include` picks what comes with ids and scores ("metadata", "text", "vector"; `()` is
        fastest); `ef_search` widens (or narrows) an HNSW search, default max(192, 8k), and
        `nprobe` an IVF one (lists searched, at most all), default about half the lists; a
        collection's own defaults come before those.

        The output is kept in PostgreSQL only, not in Celery's result backend."""
        blob = self._blob_matrix(queries)
        payload: dict[str, Any] = {
            "collection": collection,
            **(blob[0] if blob else _queries(queries)),
            "k": k,
            "where": where or {},
            "include": list(include),
        }
        payload |= _given(min_seq=min_seq, ef_search=ef_search, nprobe=nprobe)
        store, key = self._blobs, blob[1] if blob else None
        on_error = (lambda: store.delete(key)) if store is not None and key else None
        return Request(payload, celery_result=False, on_error=on_error)

    @operation(agents.snapshot)
    def snapshot(self, collection: str) -> dict[str, Any]:
        """Have one vector worker write its replica of the collection to disk."""
        return {"collection": collection}

    @operation(agents.stats)
    def stats(self, collection: str) -> dict[str, Any]:
        return {"collection": collection}


def _given(**options: Any) -> dict[str, Any]:
    """The options that were set (None means the agent's default)."""
    return {k: v for k, v in options.items() if v is not None}
