"""`Client.memory`: the memory agents as Python calls (submit, then wait for the result)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from conveyor.memory.schema import (
    Forgotten,
    RememberResult,
    SearchResult,
    Stats,
    Swept,
    Window,
)

if TYPE_CHECKING:
    from conveyor.client import Client

M = TypeVar("M", bound=BaseModel)


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class MemoryAPI:
    """Each method runs its `memory.*` agent and returns the typed result; the `*_async`
    forms return the run id at once, for `Client.wait()` or `Client.result()` later."""

    def __init__(self, client: Client, timeout: float | None = 60.0) -> None:
        self.client = client
        self.timeout = timeout

    def _result(self, run_id: str, model: type[M]) -> M:
        return model.model_validate(self.client.result(run_id, timeout=self.timeout))

    @staticmethod
    def _remember_payload(
        namespace: str,
        session: str,
        content: str | None,
        items: list[dict[str, Any]] | None,
        dedup: bool,
        item_fields: dict[str, Any],
        embed: bool = False,
    ) -> dict[str, Any]:
        if (content is None) == (items is None):
            raise ValueError("give either content (one item) or items (a batch), not both")
        batch = items if items is not None else [{"content": content, **_drop_none(**item_fields)}]
        return {
            "namespace": namespace,
            "session": session,
            "items": batch,
            "dedup": dedup,
            "embed": embed,
        }

    def remember_async(
        self,
        namespace: str,
        session: str,
        content: str | None = None,
        *,
        items: list[dict[str, Any]] | None = None,
        role: str | None = None,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
        dedup: bool = True,
        embed: bool = False,
    ) -> str:
        fields = {"role": role, "metadata": metadata, "ttl_seconds": ttl_seconds}
        payload = self._remember_payload(namespace, session, content, items, dedup, fields, embed)
        return self.client.submit("memory.remember", payload)

    def remember(
        self,
        namespace: str,
        session: str,
        content: str | None = None,
        *,
        items: list[dict[str, Any]] | None = None,
        role: str | None = None,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
        dedup: bool = True,
        embed: bool = False,
    ) -> RememberResult:
        """Remember one item (`content`, with role/metadata/ttl_seconds) or a batch (`items`);
        `embed=True` also indexes them for hybrid search."""
        run_id = self.remember_async(
            namespace,
            session,
            content,
            items=items,
            role=role,
            metadata=metadata,
            ttl_seconds=ttl_seconds,
            dedup=dedup,
            embed=embed,
        )
        return self._result(run_id, RememberResult)

    def recall_async(
        self,
        namespace: str,
        session: str,
        *,
        last: int | None = None,
        since: datetime | None = None,
        max_tokens: int | None = None,
    ) -> str:
        payload = _drop_none(
            namespace=namespace,
            session=session,
            last=last,
            since=since.isoformat() if since else None,
            max_tokens=max_tokens,
        )
        return self.client.submit("memory.recall", payload)

    def recall(
        self,
        namespace: str,
        session: str,
        *,
        last: int | None = None,
        since: datetime | None = None,
        max_tokens: int | None = None,
    ) -> Window:
        """The session's newest items within every bound given, oldest first."""
        run_id = self.recall_async(
            namespace, session, last=last, since=since, max_tokens=max_tokens
        )
        return self._result(run_id, Window)

    def search_async(
        self,
        namespace: str,
        query: str,
        *,
        session: str | None = None,
        where: dict[str, Any] | None = None,
        limit: int = 10,
        mode: str = "text",
        rrf_k: int = 60,
        candidates: int = 50,
    ) -> str:
        payload = _drop_none(
            namespace=namespace,
            query=query,
            session=session,
            where=where,
            limit=limit,
            mode=mode,
            rrf_k=rrf_k,
            candidates=candidates,
        )
        return self.client.submit("memory.search", payload)

    def search(
        self,
        namespace: str,
        query: str,
        *,
        session: str | None = None,
        where: dict[str, Any] | None = None,
        limit: int = 10,
        mode: str = "text",
        rrf_k: int = 60,
        candidates: int = 50,
    ) -> SearchResult:
        """Full-text search in a namespace, best first; `where` filters on metadata.

        mode="hybrid" fuses it with vector similarity (items remembered with embed=True) by
        reciprocal rank fusion: score = sum of 1 / (rrf_k + rank) over the two rankings,
        each cut to `candidates` items.
        """
        run_id = self.search_async(
            namespace,
            query,
            session=session,
            where=where,
            limit=limit,
            mode=mode,
            rrf_k=rrf_k,
            candidates=candidates,
        )
        return self._result(run_id, SearchResult)

    def forget_async(
        self,
        namespace: str,
        *,
        ids: list[str] | None = None,
        session: str | None = None,
        where: dict[str, Any] | None = None,
        everything: bool = False,
    ) -> str:
        payload = _drop_none(
            namespace=namespace,
            ids=ids,
            session=session,
            where=where,
            everything=True if everything else None,
        )
        return self.client.submit("memory.forget", payload)

    def forget(
        self,
        namespace: str,
        *,
        ids: list[str] | None = None,
        session: str | None = None,
        where: dict[str, Any] | None = None,
        everything: bool = False,
    ) -> Forgotten:
        """Delete by ids, session or metadata filter (combined), or the whole namespace."""
        run_id = self.forget_async(
            namespace, ids=ids, session=session, where=where, everything=everything
        )
        return self._result(run_id, Forgotten)

    def stats(self, namespace: str) -> Stats:
        """Sessions, items, bytes, oldest and newest item of a namespace."""
        return self._result(self.client.submit("memory.stats", {"namespace": namespace}), Stats)

    def sweep(self, batch_size: int = 1000, max_batches: int = 100) -> Swept:
        """Delete expired items now, in bounded batches."""
        payload = {"batch_size": batch_size, "max_batches": max_batches}
        return self._result(self.client.submit("memory.sweep", payload), Swept)
