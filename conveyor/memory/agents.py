"""Built-in agents of the memory pool: thin bindings of conveyor.memory's MemoryStore."""

from __future__ import annotations

from conveyor.agents import agent
from conveyor.context import current_run
from conveyor.memory import MemoryStore, store_for
from conveyor.memory import schema as m

POOL = "memory"


def _store() -> MemoryStore:
    return store_for(current_run().settings)


@agent(name="memory.remember", pool=POOL)
def remember(request: m.RememberRequest) -> m.RememberResult:
    """Add one item or a batch to a session; repeated content returns the existing item."""
    return _store().remember(request)


@agent(name="memory.recall", pool=POOL, idempotent=True)
def recall(request: m.RecallRequest) -> m.Window:
    """A session's window (last N, since a time, token budget), oldest first."""
    return _store().recall(request)


@agent(name="memory.search", pool=POOL, idempotent=True)
def search(request: m.SearchRequest) -> m.SearchResult:
    """Full-text search within a namespace, with metadata filters."""
    return _store().search(request)


@agent(name="memory.forget", pool=POOL)
def forget(request: m.ForgetRequest) -> m.Forgotten:
    """Hard-delete by ids, session, metadata filter, or the whole namespace."""
    return _store().forget(request)


@agent(name="memory.stats", pool=POOL, idempotent=True)
def stats(request: m.StatsRequest) -> m.Stats:
    """Sessions, items, bytes and the oldest and newest item of a namespace."""
    return _store().stats(request)


@agent(name="memory.sweep", pool=POOL, idempotent=True)
def sweep(request: m.SweepRequest) -> m.Swept:
    """Delete expired items in bounded batches (scheduled by beat)."""
    return _store().sweep_expired(request)
