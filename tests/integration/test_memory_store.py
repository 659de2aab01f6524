"""MemoryStore directly (no Celery) on the real PostgreSQL and Redis: cache, locking, sweep."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from conveyor.memory import (
    MemoryStore,
    NewItem,
    RecallCache,
    RecallRequest,
    RememberRequest,
    SweepRequest,
)
from conveyor.models.db import engine_for
from tests.support.waiting import wait_until


def _url(database_url: str) -> str:
    return database_url.replace("postgresql://", "postgresql+psycopg://", 1)


def _remember(store: MemoryStore, ns: str, session: str, *contents: str) -> None:
    items = [NewItem(content=c) for c in contents]
    store.remember(RememberRequest(namespace=ns, session=session, items=items))


@pytest.fixture
def ns() -> str:
    return f"store-{uuid.uuid4().hex[:8]}"


def test_a_cache_outage_degrades_to_postgres(database_url: str, ns: str) -> None:
    dead = RecallCache(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    store = MemoryStore(engine_for(_url(database_url)), dead)
    _remember(store, ns, "s", "still works")
    window = store.recall(RecallRequest(namespace=ns, session="s"))
    assert [i.content for i in window.items] == ["still works"] and not window.cached
    assert not dead.enabled, "after a failure the cache is skipped for a while"


def test_cache_hits_and_is_invalidated_across_stores(
    database_url: str, redis_url: str, ns: str
) -> None:
    engine = engine_for(_url(database_url))
    reader = MemoryStore(engine, RecallCache.from_url(redis_url))
    writer = MemoryStore(engine, RecallCache.from_url(redis_url))
    _remember(writer, ns, "s", "one")
    request = RecallRequest(namespace=ns, session="s")
    assert not reader.recall(request).cached
    wait_until(lambda: reader.recall(request).cached, 10, "a cached window")
    _remember(writer, ns, "s", "two")
    assert [i.content for i in reader.recall(request).items] == ["one", "two"]


def test_concurrent_writers_of_one_session_get_distinct_seqs(database_url: str, ns: str) -> None:
    store = MemoryStore(engine_for(_url(database_url)))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: _remember(store, ns, "s", f"a{i}", f"b{i}"), range(20)))
    window = store.recall(RecallRequest(namespace=ns, session="s"))
    assert [i.seq for i in window.items] == list(range(1, 41))


def test_sweep_deletes_expired_items_in_bounded_batches(database_url: str, ns: str) -> None:
    engine = engine_for(_url(database_url))
    store = MemoryStore(engine)
    items = [NewItem(content=f"gone {i}", ttl_seconds=0.001) for i in range(25)]
    store.remember(RememberRequest(namespace=ns, session="s", items=items))
    _remember(store, ns, "s", "stays")
    swept = store.sweep_expired(SweepRequest(batch_size=10, max_batches=2))
    assert (swept.deleted, swept.batches) == (20, 2)
    rest = store.sweep_expired(SweepRequest(batch_size=10))
    assert rest.deleted >= 5
    assert [i.content for i in store.recall(RecallRequest(namespace=ns, session="s")).items] == [
        "stays"
    ]
