"""The memory service end to end: memory.* agents on a real memory-pool worker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import celery
import pytest

from conveyor import Client, InvalidInput, RunStatus
from tests.support.waiting import wait_until


@pytest.fixture
def ns() -> str:
    return f"ns-{uuid.uuid4().hex[:8]}"


def test_remember_then_recall_in_conversation_order(client: Client, ns: str) -> None:
    first = client.memory.remember(ns, "s1", "hello there", role="user")
    assert [(i.seq, i.deduped) for i in first.items] == [(1, False)]
    batch = client.memory.remember(
        ns,
        "s1",
        items=[
            {"content": "general kenobi", "role": "assistant"},
            {"content": "you are a bold one", "role": "user", "metadata": {"k": 1}},
        ],
    )
    assert [i.seq for i in batch.items] == [2, 3]
    window = client.memory.recall(ns, "s1", last=2)
    assert [i.content for i in window.items] == ["general kenobi", "you are a bold one"]
    assert [i.role for i in window.items] == ["assistant", "user"]
    assert window.items[1].metadata == {"k": 1}
    assert window.tokens == sum(i.tokens for i in window.items) > 0


def test_repeated_content_is_deduped_within_a_session_only(client: Client, ns: str) -> None:
    first = client.memory.remember(ns, "s", "The  sky is blue.")
    again = client.memory.remember(
        ns, "s", items=[{"content": "The sky is blue. "}, {"content": "new"}, {"content": "new"}]
    )
    assert again.items[0].id == first.items[0].id and again.items[0].deduped
    assert again.items[1].seq == 2 and not again.items[1].deduped
    assert again.items[2].id == again.items[1].id and again.items[2].deduped
    other = client.memory.remember(ns, "other", "The sky is blue.")
    assert not other.items[0].deduped
    kept = client.memory.remember(ns, "s", "new", dedup=False)
    assert not kept.items[0].deduped and kept.items[0].seq == 3
    assert len(client.memory.recall(ns, "s").items) == 3


def test_recall_by_time_and_by_token_budget(client: Client, ns: str) -> None:
    client.memory.remember(ns, "s", items=[{"content": f"word{i} " * 10} for i in range(5)])
    everything = client.memory.recall(ns, "s")
    per_item = everything.items[0].tokens
    budget = client.memory.recall(ns, "s", max_tokens=per_item * 2 + 1)
    assert [i.seq for i in budget.items] == [4, 5]
    later = datetime.now(UTC) + timedelta(hours=1)
    assert client.memory.recall(ns, "s", since=later).items == []
    since = client.memory.recall(ns, "s", since=everything.items[0].created_at, last=3)
    assert [i.seq for i in since.items] == [3, 4, 5]


def test_recall_is_cached_and_writes_and_forgets_invalidate_it(client: Client, ns: str) -> None:
    client.memory.remember(ns, "hot", "one")
    assert not client.memory.recall(ns, "hot").cached
    wait_until(lambda: client.memory.recall(ns, "hot").cached, 10, "a cached window")
    client.memory.remember(ns, "hot", "two")
    fresh = client.memory.recall(ns, "hot")
    assert not fresh.cached and [i.content for i in fresh.items] == ["one", "two"]
    wait_until(lambda: client.memory.recall(ns, "hot").cached, 10, "the new window cached")
    client.memory.forget(ns, ids=[fresh.items[0].id])
    after = client.memory.recall(ns, "hot")
    assert not after.cached and [i.content for i in after.items] == ["two"]


def test_expired_items_are_never_returned_and_are_swept(client: Client, ns: str) -> None:
    client.memory.remember(ns, "s", "short lived fact", ttl_seconds=1, metadata={"t": 1})
    client.memory.remember(ns, "s", "long lived fact", ttl_seconds=3600)
    assert len(client.memory.recall(ns, "s").items) == 2
    wait_until(
        lambda: [i.content for i in client.memory.recall(ns, "s").items] == ["long lived fact"],
        15,
        "the short-lived item to expire",
    )
    assert [h.item.content for h in client.memory.search(ns, "fact").hits] == ["long lived fact"]
    assert client.memory.stats(ns).items == 1
    assert client.memory.sweep().deleted >= 1
    again = client.memory.remember(ns, "s", "short lived fact")
    assert not again.items[0].deduped


def test_search_ranks_and_filters_on_metadata(client: Client, ns: str) -> None:
    client.memory.remember(
        ns,
        "s",
        items=[
            {"content": "invoice overdue for acme", "metadata": {"topic": "billing", "n": 5}},
            {"content": "invoice paid by globex", "metadata": {"topic": "billing", "n": 1}},
            {"content": "the weather is nice", "metadata": {"topic": "chat", "n": 9}},
            {"content": "invoice invoice invoice", "metadata": {"at": "2026-01-05T00:00:00Z"}},
        ],
    )
    hits = client.memory.search(ns, "invoice").hits
    assert hits[0].item.content == "invoice invoice invoice"
    assert len(hits) == 3 and hits[0].rank >= hits[1].rank
    billing = client.memory.search(ns, "invoice", where={"topic": "billing"}).hits
    assert {h.item.content for h in billing} == {
        "invoice overdue for acme",
        "invoice paid by globex",
    }
    high = client.memory.search(ns, "invoice", where={"n": {"gte": 2}}).hits
    assert [h.item.content for h in high] == ["invoice overdue for acme"]
    any_of = client.memory.search(ns, "weather OR paid", where={"topic": {"in": ["chat", "x"]}})
    assert [h.item.content for h in any_of.hits] == ["the weather is nice"]
    january = client.memory.search(
        ns, "invoice", where={"at": {"gte": "2026-01-01T00:00:00Z", "lt": "2026-02-01T00:00:00Z"}}
    )
    assert [h.item.content for h in january.hits] == ["invoice invoice invoice"]


def test_forget_by_session_filter_ids_and_namespace(client: Client, ns: str) -> None:
    client.memory.remember(ns, "a", items=[{"content": "a1"}, {"content": "a2"}])
    client.memory.remember(
        ns, "b", items=[{"content": "b1", "metadata": {"drop": True}}, {"content": "b2"}]
    )
    assert client.memory.forget(ns, where={"drop": True}).deleted == 1
    assert client.memory.forget(ns, session="a").deleted == 2
    assert client.memory.remember(ns, "a", "a3").items[0].seq == 1
    stats = client.memory.stats(ns)
    assert (stats.sessions, stats.items) == (2, 2)
    assert stats.bytes == len("b2") + len("a3")
    assert stats.oldest is not None and stats.newest is not None
    assert stats.oldest <= stats.newest
    assert client.memory.forget(ns, everything=True).deleted == 2
    assert client.memory.stats(ns).items == 0


ADVERSARIAL = ["t", "t%", "t_", "%", "_", "tt", "t/x", "t'x", 't"x', "t\\", "t x", "T"]


def test_no_call_reads_or_deletes_another_namespace(client: Client) -> None:
    base = uuid.uuid4().hex[:6]
    names = [base + n for n in ADVERSARIAL]
    for name in names:
        client.memory.remember(name, "s", f"secret of {name} shared words")
        client.memory.remember(name, "s'%_", f"other secret of {name}", metadata={"k": "v"})
    for name in names:
        window = client.memory.recall(name, "s")
        assert [i.namespace for i in window.items] == [name]
        hits = client.memory.search(name, "secret").hits
        assert {h.item.namespace for h in hits} == {name} and len(hits) == 2
        assert client.memory.stats(name).items == 2
    victim, attacker = names[0], names[1]  # "…t" and "…t%"
    assert client.memory.forget(attacker, where={"k": "v"}).deleted == 1
    assert client.memory.forget(attacker, everything=True).deleted == 1
    foreign = client.memory.recall(victim, "s").items[0].id
    assert client.memory.forget(names[2], ids=[foreign]).deleted == 0
    for name in names:
        assert client.memory.stats(name).items == (0 if name == attacker else 2)


def test_text_is_returned_exactly(client: Client, ns: str) -> None:
    odd = [
        "nul \x00 inside \\0 and \\\x00 too",
        "emoji 🧠🚀 and ZWJ 👩‍💻",
        "mixed: English, русский, 中文, العربية, हिन्दी",
        "trailing whitespace   \n\t",
    ]
    client.memory.remember(ns, "s", items=[{"content": c} for c in odd], dedup=False)
    assert [i.content for i in client.memory.recall(ns, "s").items] == odd
    assert [h.item.content for h in client.memory.search(ns, "русский").hits] == [odd[2]]


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"items": [{"content": ""}]}, "items.0.content", "empty"),
        ({"items": [{"content": "   "}]}, "items.0.content", "empty"),
        ({"items": [{"content": "x" * (1024 * 1024 + 1)}]}, "items.0.content", "1048576 bytes"),
        ({"items": [{"content": "x", "ttl_seconds": -5}]}, "items.0.ttl_seconds", "positive"),
        ({"items": [{"content": "x", "ttl_seconds": 1e12}]}, "items.0.ttl_seconds", "limit"),
        ({"items": [{"content": "x", "role": "wizard"}]}, "items.0.role", "'user'"),
        ({"items": [{"content": str(i)} for i in range(1001)]}, "items", "limit is 1000"),
        ({"items": [{"content": "x", "metadata": {"k": "\x00"}}]}, "items.0.metadata", "NUL"),
        ({"items": []}, "items", "at least 1"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    client: Client, ns: str, payload: dict[str, object], field: str, words: str
) -> None:
    full = {"namespace": ns, "session": "s", **payload}
    with pytest.raises(InvalidInput) as info:
        client.submit("memory.remember", full)
    assert f"{field}:" in str(info.value) and words in str(info.value)
    plain = celery.Celery("plain", broker=client.app.conf.broker_url)
    sent = plain.send_task("memory.remember", kwargs=full)
    run = client.wait(sent.id, timeout=30)
    assert run.status is RunStatus.REJECTED and run.attempts == 1
    assert field in (run.error_message or "")
    assert client.memory.stats(ns).items == 0


def test_hybrid_search_fuses_text_and_vector_rankings(client: Client, ns: str) -> None:
    docs = [
        "the cat sat on the mat",
        "dogs like to chase a cat",
        "stock market news for today",
        "the mat was red",
    ]
    done = client.memory.remember(ns, "s", items=[{"content": d} for d in docs], embed=True)
    client.memory.remember(f"{ns}-other", "s", "the cat sat on the mat", embed=True)
    assert client.memory.search(ns, "cat mat dogs").hits == []
    hybrid = client.memory.search(ns, "cat mat dogs", mode="hybrid")
    assert {h.item.namespace for h in hybrid.hits} == {ns}
    assert hybrid.hits[0].item.content in docs[:2]
    assert all(h.text_rank is None and h.vector_rank for h in hybrid.hits)
    both = client.memory.search(ns, "cat mat", mode="hybrid", limit=2).hits
    assert both[0].item.content == docs[0]
    assert (both[0].text_rank, both[0].vector_rank) == (1, 1)
    assert both[0].rank == pytest.approx(2 / 61)
    client.memory.forget(ns, ids=[done.items[0].id])
    after = client.memory.search(ns, "cat mat", mode="hybrid").hits
    assert docs[0] not in [h.item.content for h in after]
