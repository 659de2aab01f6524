"""MemoryStore's scoping, called in-process on a real PostgreSQL (issue 17).

Every read and delete is scoped by namespace (and by session where asked); no expired item
is ever returned. tests/integration/test_memory.py checks this through workers; these call the
store directly, so that each bound is checked on its own (mutation testing,
benchmarks/mutation.py, found several unguarded).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from conveyor import Client
from conveyor.memory import (
    ForgetRequest,
    MemoryStore,
    NewItem,
    RecallRequest,
    RememberRequest,
    SearchRequest,
    StatsRequest,
    SweepRequest,
)
from conveyor.models.db import engine_for


@pytest.fixture(scope="module")
def store(database_url: str) -> Iterator[MemoryStore]:
    engine = engine_for(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    yield MemoryStore(engine)
    engine.dispose()


@pytest.fixture
def ns() -> str:
    return f"scope-{uuid.uuid4().hex[:8]}"


def remember(store: MemoryStore, ns: str, session: str, *contents: str, **kw: object) -> list[str]:
    items = [NewItem(content=c, **kw) for c in contents]  # type: ignore[arg-type]
    result = store.remember(RememberRequest(namespace=ns, session=session, items=items))
    return [r.id for r in result.items]


def contents(store: MemoryStore, ns: str, session: str, **bounds: object) -> list[str]:
    request = RecallRequest(namespace=ns, session=session, **bounds)  # type: ignore[arg-type]
    return [i.content for i in store.recall(request).items]


def expire(store: MemoryStore, ids: list[str]) -> None:
    """Move items' expiry into the past, as time would."""
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE memory_items SET expires_at = now() - interval '1 second' "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        )


def test_remember_numbers_each_session_on_its_own_and_dedups_within_it(
    store: MemoryStore, ns: str
) -> None:
    first = store.remember(
        RememberRequest(namespace=ns, session="a", items=[NewItem(content=c) for c in "xyx"])
    )
    assert [(r.seq, r.deduped) for r in first.items] == [(1, False), (2, False), (1, True)]
    assert first.items[2].id == first.items[0].id
    other = store.remember(RememberRequest(namespace=ns, session="b", items=[NewItem(content="x")]))
    assert [(r.seq, r.deduped) for r in other.items] == [(1, False)], "dedup is per session"
    elsewhere = store.remember(
        RememberRequest(namespace=f"{ns}-2", session="a", items=[NewItem(content="x")])
    )
    assert [(r.seq, r.deduped) for r in elsewhere.items] == [(1, False)], "and per namespace"
    again = store.remember(
        RememberRequest(
            namespace=ns, session="a", items=[NewItem(content="z"), NewItem(content="y")]
        )
    )
    assert [(r.seq, r.deduped) for r in again.items] == [(3, False), (2, True)]
    plain = store.remember(
        RememberRequest(namespace=ns, session="a", items=[NewItem(content="z")], dedup=False)
    )
    assert [(r.seq, r.deduped) for r in plain.items] == [(4, False)]
    assert contents(store, ns, "a") == ["x", "y", "z", "z"]


def test_repeated_content_whose_first_copy_expired_is_stored_anew(
    store: MemoryStore, ns: str
) -> None:
    [old] = remember(store, ns, "s", "again")
    expire(store, [old])
    [new] = remember(store, ns, "s", "again")
    assert new != old
    assert contents(store, ns, "s") == ["again"]
    with store.engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM memory_items WHERE id = :id"), {"id": old})
        assert left.scalar_one() == 0, "the expired copy was deleted"


def test_recall_reads_one_session_of_one_namespace_within_every_bound(
    store: MemoryStore, ns: str
) -> None:
    remember(store, ns, "s", "one", "two", "three four five six seven eight")
    remember(store, ns, "t", "other session")
    remember(store, f"{ns}-2", "s", "other namespace")
    [gone] = remember(store, ns, "s", "expired")
    expire(store, [gone])
    assert contents(store, ns, "s") == ["one", "two", "three four five six seven eight"]
    assert contents(store, ns, "s", last=2) == ["two", "three four five six seven eight"]
    window = store.recall(RecallRequest(namespace=ns, session="s"))
    budget = window.items[-1].tokens
    assert contents(store, ns, "s", max_tokens=budget) == ["three four five six seven eight"]
    assert contents(store, ns, "s", max_tokens=budget + window.items[1].tokens) == [
        "two", "three four five six seven eight",
    ]  # fmt: skip
    assert window.tokens == sum(i.tokens for i in window.items)
    newest = window.items[-1].created_at
    assert contents(store, ns, "s", since=newest + timedelta(seconds=1)) == []
    assert len(contents(store, ns, "s", since=newest - timedelta(hours=1))) == 3
    assert contents(store, ns, "t") == ["other session"]


def test_search_stays_in_its_namespace_and_session_and_skips_expired_items(
    store: MemoryStore, ns: str
) -> None:
    remember(store, ns, "s", "apples are red", metadata={"kind": "fruit"})
    remember(store, ns, "t", "apples are green", metadata={"kind": "fruit"})
    remember(store, f"{ns}-2", "s", "apples everywhere")
    [gone] = remember(store, ns, "s", "apples gone bad")
    expire(store, [gone])

    def found(**kw: object) -> list[str]:
        request = SearchRequest(namespace=ns, query="apples", **kw)  # type: ignore[arg-type]
        return sorted(h.item.content for h in store.search(request).hits)

    assert found() == ["apples are green", "apples are red"]
    ranked = store.search(SearchRequest(namespace=ns, query="apples"))
    assert [h.text_rank for h in ranked.hits] == [1, 2] and ranked.namespace == ns
    assert found(session="t") == ["apples are green"]
    assert found(where={"kind": "vegetable"}) == []
    assert len(found(limit=1)) == 1


def test_forget_deletes_only_what_it_names_and_stats_count_one_namespace(
    store: MemoryStore, ns: str
) -> None:
    kept = remember(store, ns, "keep", "a", "b")
    [one, two] = remember(store, ns, "drop", "c", "d", metadata={"tag": "x"})
    remember(store, f"{ns}-2", "drop", "not mine")
    stats = store.stats(StatsRequest(namespace=ns))
    assert (stats.sessions, stats.items, stats.bytes) == (2, 4, 4)
    assert stats.oldest is not None and stats.newest is not None and stats.oldest <= stats.newest

    by_id = store.forget(ForgetRequest(namespace=ns, ids=[one, "not-a-uuid"]))
    assert by_id.deleted == 1
    assert store.forget(ForgetRequest(namespace=f"{ns}-2", ids=[two])).deleted == 0
    assert store.forget(ForgetRequest(namespace=ns, where={"tag": "y"})).deleted == 0
    assert store.forget(ForgetRequest(namespace=ns, session="drop")).deleted == 1
    assert contents(store, ns, "keep") == ["a", "b"]
    # a forgotten session starts numbering again; a session with items left does not
    assert (
        store.remember(RememberRequest(namespace=ns, session="drop", items=[NewItem(content="e")]))
        .items[0]
        .seq
        == 1
    )
    assert store.forget(ForgetRequest(namespace=ns, ids=[kept[0]])).deleted == 1
    assert (
        store.remember(RememberRequest(namespace=ns, session="keep", items=[NewItem(content="f")]))
        .items[0]
        .seq
        == 3
    )
    assert contents(store, f"{ns}-2", "drop") == ["not mine"]

    assert store.forget(ForgetRequest(namespace=ns, everything=True)).deleted == 3
    emptied = store.stats(StatsRequest(namespace=ns))
    assert (emptied.sessions, emptied.items, emptied.bytes, emptied.oldest) == (0, 0, 0, None)
    assert (
        store.remember(RememberRequest(namespace=ns, session="keep", items=[NewItem(content="g")]))
        .items[0]
        .seq
        == 1
    ), "everything forgets the sessions too"
    assert store.stats(StatsRequest(namespace=f"{ns}-2")).items == 1


def test_a_token_budget_is_inclusive_through_a_worker(client: Client, ns: str) -> None:
    """The recall statement is built once, at import, so only a worker that imports it afresh
    runs what is checked here: a budget equal to the newest items' tokens returns them all."""
    client.memory.remember(ns, "s", items=[{"content": f"w{i} " * 5} for i in range(4)])
    everything = client.memory.recall(ns, "s")
    exact = sum(i.tokens for i in everything.items[-2:])
    budget = client.memory.recall(ns, "s", max_tokens=exact)
    assert [i.seq for i in budget.items] == [3, 4]
    assert budget.tokens == exact


def test_stats_and_sweep_skip_and_delete_only_expired_items(store: MemoryStore, ns: str) -> None:
    live = remember(store, ns, "s", "live", "forever")
    doomed = remember(store, ns, "s", "x1", "x2", "x3")
    expire(store, doomed)
    stats = store.stats(StatsRequest(namespace=ns))
    assert (stats.items, stats.bytes) == (2, len("live") + len("forever"))
    swept = store.sweep_expired(SweepRequest(batch_size=2, max_batches=10))
    assert swept.deleted >= 3 and swept.batches >= 2
    with store.engine.connect() as conn:
        left = conn.execute(
            text("SELECT id::text FROM memory_items WHERE namespace = :ns ORDER BY seq"), {"ns": ns}
        ).scalars()
        assert list(left) == live
