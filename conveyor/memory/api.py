"""`Client.memory`: the memory agents as typed Python calls.

Each call runs its `memory.*` agent and returns the typed result; `.submit(...)` on any of
them (`client.memory.recall.submit(...)`) returns a `RunHandle` at once instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conveyor.facade import Facade, operation
from conveyor.memory import agents


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class MemoryAPI(Facade):
    """Prompt memory on a client: remember, recall, search, forget, stats, sweep."""

    timeout: float | None = 60.0

    @operation(agents.remember)
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
    ) -> dict[str, Any]:
        """Remember one item (`content`, with role/metadata/ttl_seconds) or a batch (`items`);
        `embed=True` also indexes them for hybrid search."""
        if (content is None) == (items is None):
            raise ValueError("give either content (one item) or items (a batch), not both")
        one = {
            "content": content,
            **_drop_none(role=role, metadata=metadata, ttl_seconds=ttl_seconds),
        }
        return {
            "namespace": namespace,
            "session": session,
            "items": items if items is not None else [one],
            "dedup": dedup,
            "embed": embed,
        }

    @operation(agents.recall)
    def recall(
        self,
        namespace: str,
        session: str,
        *,
        last: int | None = None,
        since: datetime | None = None,
        max_tokens: int | None = None,
    ) -> dict[str, Any]:
        """The session's newest items within every bound given, oldest first."""
        return _drop_none(
            namespace=namespace,
            session=session,
            last=last,
            since=since.isoformat() if since else None,
            max_tokens=max_tokens,
        )

    @operation(agents.search)
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
    ) -> dict[str, Any]:
        """Full-text search in a namespace, best first; `where` filters on metadata.

        mode="hybrid" fuses it with vector similarity (items remembered with embed=True) by
        reciprocal rank fusion: score = sum of 1 / (rrf_k + rank) over the two rankings,
        each cut to `candidates` items.
        """
        return _drop_none(
            namespace=namespace,
            query=query,
            session=session,
            where=where,
            limit=limit,
            mode=mode,
            rrf_k=rrf_k,
            candidates=candidates,
        )

    @operation(agents.forget)
    def forget(
        self,
        namespace: str,
        *,
        ids: list[str] | None = None,
        session: str | None = None,
        where: dict[str, Any] | None = None,
        everything: bool = False,
    ) -> dict[str, Any]:
        """Delete by ids, session or metadata filter (combined), or the whole namespace."""
        return _drop_none(
            namespace=namespace,
            ids=ids,
            session=session,
            where=where,
            everything=True if everything else None,
        )

    @operation(agents.stats)
    def stats(self, namespace: str) -> dict[str, Any]:
        """Sessions, items, bytes, oldest and newest item of a namespace."""
        return {"namespace": namespace}

    @operation(agents.sweep)
    def sweep(self, batch_size: int = 1000, max_batches: int = 100) -> dict[str, Any]:
        """Delete expired items now, in bounded batches."""
        return {"batch_size": batch_size, "max_batches": max_batches}
