"""`Client.vector`: the vector agents as Python calls (submit, then wait for the result)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from conveyor.blobs import BLOB_FROM_BYTES, BlobStore, blob_store_for
from conveyor.errors import InvalidInput
from conveyor.vector.schema import (
    Collection,
    Deleted,
    Dropped,
    SearchResult,
    Snapshotted,
    Stats,
    Upserted,
    check_finite,
    encode_vector,
    matrix_rows,
)

if TYPE_CHECKING:
    from conveyor.client import Client

M = TypeVar("M", bound=BaseModel)


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


class VectorAPI:
    """Each method runs its `vector.*` agent and returns the typed result; `upsert_async` and
    `search_async` return the run id at once. Vectors travel as base64 float32 (`vector_b64`);
    a plain Celery client may send JSON lists (`vector`) instead."""

    def __init__(self, client: Client, timeout: float | None = 120.0) -> None:
        self.client = client
        self.timeout = timeout

    @cached_property
    def _blobs(self) -> BlobStore | None:
        return blob_store_for(self.client.app.settings)

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

    def _run(self, agent: str, payload: dict[str, Any], model: type[M]) -> M:
        run_id = self.client.submit(agent, payload)
        return model.model_validate(self.client.result(run_id, timeout=self.timeout))

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
    ) -> Collection:
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
        if ef_search is not None:
            payload["ef_search"] = ef_search
        if nprobe is not None:
            payload["nprobe"] = nprobe
        return self._run("vector.create_collection", payload, Collection)

    def drop_collection(self, name: str, *, missing_ok: bool = False) -> Dropped:
        payload = {"name": name, "missing_ok": missing_ok}
        return self._run("vector.drop_collection", payload, Dropped)

    def upsert_async(self, collection: str, items: list[dict[str, Any]]) -> str:
        payload = {"collection": collection, "items": [_item(i) for i in items]}
        return self.client.submit("vector.upsert", payload)

    def upsert(self, collection: str, items: list[dict[str, Any]]) -> Upserted:
        """Write items `{"id", "vector" and/or "text", "metadata"}`, all or none."""
        run_id = self.upsert_async(collection, items)
        return Upserted.model_validate(self.client.result(run_id, timeout=self.timeout))

    def delete(self, collection: str, ids: list[str]) -> Deleted:
        return self._run("vector.delete", {"collection": collection, "ids": ids}, Deleted)

    def search_async(
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
    ) -> str:
        """Submit a search and return its run id. Read the result with `client.result`: it
        is kept in PostgreSQL only, not in Celery's result backend (`celery_result=False`)."""
        blob = self._blob_matrix(queries)
        payload: dict[str, Any] = {
            "collection": collection,
            **(blob[0] if blob else _queries(queries)),
            "k": k,
            "where": where or {},
            "include": list(include),
        }
        if min_seq is not None:
            payload["min_seq"] = min_seq
        if ef_search is not None:
            payload["ef_search"] = ef_search
        if nprobe is not None:
            payload["nprobe"] = nprobe
        try:
            return self.client.submit("vector.search", payload, celery_result=False)
        except BaseException:
            if blob is not None and self._blobs is not None:
                self._blobs.delete(blob[1])
            raise

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
    ) -> SearchResult:
        """k best matches per query (a text or a vector); `min_seq` reads your writes;
        `include` picks what comes with ids and scores ("metadata", "text", "vector"; `()` is
        fastest); `ef_search` widens (or narrows) an HNSW search, default max(192, 8k), and
        `nprobe` an IVF one (lists searched, at most all), default about half the lists; a
        collection's own defaults come before those."""
        run_id = self.search_async(
            collection,
            queries,
            k=k,
            where=where,
            min_seq=min_seq,
            include=include,
            ef_search=ef_search,
            nprobe=nprobe,
        )
        return SearchResult.model_validate(self.client.result(run_id, timeout=self.timeout))

    def snapshot(self, collection: str) -> Snapshotted:
        """Have one vector worker write its replica of the collection to disk."""
        return self._run("vector.snapshot", {"collection": collection}, Snapshotted)

    def stats(self, collection: str) -> Stats:
        return self._run("vector.stats", {"collection": collection}, Stats)
