"""VectorStore's seqs, called in-process on a real PostgreSQL, and a replica following them.

Every upsert or delete takes the next seqs of its collection, so a replica that applies the
rows above the seq it has seen is exactly up to date; a rewrite or a delete of an existing id
moves that id to a new seq (issue 17). Mutation testing (benchmarks/mutation.py) found the seq
arithmetic only partly guarded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from conveyor.errors import InvalidInput
from conveyor.models.db import engine_for
from conveyor.vector import CreateCollection, VectorStore
from conveyor.vector.replica import Replica

DIM = 4


@pytest.fixture(scope="module")
def store(database_url: str) -> Iterator[VectorStore]:
    engine = engine_for(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    yield VectorStore(engine)
    engine.dispose()


@pytest.fixture
def name(store: VectorStore) -> str:
    name = f"seq{uuid.uuid4().hex[:8]}"
    store.create(CreateCollection(name=name, dim=DIM, index="flat", metric="l2"), DIM)
    return name


def vectors(*values: float) -> np.ndarray:
    return np.array([[v] * DIM for v in values], dtype=np.float32)


def upsert(store: VectorStore, name: str, ids: list[str], *values: float) -> int:
    return store.upsert(
        name, ids, vectors(*values), [{"i": i} for i in ids], [None] * len(ids),
        [(None, None)] * len(ids),
    )  # fmt: skip


def test_upserts_and_deletes_take_consecutive_seqs_and_rewrites_move_ids(
    store: VectorStore, name: str
) -> None:
    generation, last = store.head(name) or ("", -1)
    assert last == 0 and len(generation) == 32
    assert upsert(store, name, ["a", "b", "c"], 1, 2, 3) == 3
    assert [(c.id, c.seq) for c in store.changes_since(name, 0)] == [("a", 1), ("b", 2), ("c", 3)]
    assert upsert(store, name, ["b"], 20) == 4, "a rewrite takes a new seq"
    assert [(c.id, c.seq) for c in store.changes_since(name, 1)] == [("c", 3), ("b", 4)]
    assert np.frombuffer(store.changes_since(name, 3)[0].vector or b"", "<f4")[0] == 20

    assert store.delete(name, ["c", "a", "missing"]) == (2, 6)
    assert store.delete(name, ["a"]) == (0, 6), "a tombstone is not deleted again"
    assert store.head(name) == (generation, 6)
    tail = store.changes_since(name, 4)
    assert [(c.id, c.seq, c.vector) for c in tail] == [("a", 5, None), ("c", 6, None)]
    assert store.counts(name) == (1, 2)

    caught = store.catch_up(name, 4)
    assert caught is not None and caught[0] == generation
    assert [(c.id, c.seq) for c in caught[1]] == [("a", 5), ("c", 6)]
    up_to_date = store.catch_up(name, 6)
    assert up_to_date == (generation, [])

    assert upsert(store, name, ["a"], 7) == 7, "an id comes back from its tombstone"
    assert store.counts(name) == (2, 1)
    assert store.details(name, [7])[7].id == "a"
    wide = np.full((1, DIM), 8.0)  # float64: stored as little-endian float32 all the same
    assert store.upsert(name, ["w"], wide, [{}], [None], [(None, None)]) == 8
    assert store.changes_since(name, 7)[0].vector == np.full(DIM, 8.0, "<f4").tobytes()


def test_seqs_of_an_unknown_or_dropped_collection(store: VectorStore, name: str) -> None:
    with pytest.raises(InvalidInput, match="unknown collection 'missing") as upserting:
        upsert(store, f"missing{uuid.uuid4().hex[:6]}", ["a"], 1)
    assert upserting.value.agent == "vector.upsert"
    with pytest.raises(InvalidInput, match="unknown collection 'missing") as deleting:
        store.delete(f"missing{uuid.uuid4().hex[:6]}", ["a"])
    assert deleting.value.agent == "vector.delete"
    assert store.catch_up(f"missing{uuid.uuid4().hex[:6]}", 0) is None
    upsert(store, name, ["a"], 1)
    assert store.drop(name) is True
    assert store.head(name) is None and store.catch_up(name, 0) is None


def test_a_delete_touches_only_its_own_collection(store: VectorStore, name: str) -> None:
    other = f"seq{uuid.uuid4().hex[:8]}"
    store.create(CreateCollection(name=other, dim=DIM, index="flat", metric="l2"), DIM)
    upsert(store, name, ["a", "b"], 1, 2)
    upsert(store, other, ["a", "b"], 1, 2)
    assert store.delete(name, ["a"]) == (1, 3)
    head = store.head(other)
    assert store.counts(other) == (2, 0) and head is not None and head[1] == 2
    assert [(c.id, c.seq, c.vector is None) for c in store.changes_since(other, 0)] == [
        ("a", 1, False), ("b", 2, False),
    ]  # fmt: skip


def test_a_replica_that_applies_the_changes_above_its_seq_matches_the_table(
    store: VectorStore, name: str
) -> None:
    generation, _ = store.head(name) or ("", 0)
    replica = Replica(generation, DIM, "l2", "flat")

    def follow() -> None:
        caught = store.catch_up(name, replica.applied)
        assert caught is not None
        replica.apply(caught[1])

    upsert(store, name, ["a", "b", "c"], 1, 2, 3)
    follow()
    assert (replica.applied, replica.size) == (3, 3)
    upsert(store, name, ["b"], 9)
    store.delete(name, ["c"])
    follow()
    assert (replica.applied, replica.size) == (5, 2)
    assert replica.labels == {"a": 1, "b": 4}
    hits = replica.search(vectors(9), 3)
    assert hits.rows()[0][0][0] == 4, "the rewritten vector, under its new seq"
    assert [label for label, _ in hits.rows()[0]] == [4, 1], "no retired or deleted label"
