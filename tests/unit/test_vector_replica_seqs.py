"""What a replica does with seqs (labels), where mutation testing found it unguarded (issue 17,
benchmarks/mutation.py): a flat index drops a rewritten label at once, HNSW compacts once a
fifth of its labels are retired, and a filtered search that goes through the index (many
allowed labels) or falls back to exact search returns exactly the best k.
"""

from __future__ import annotations

import numpy as np
import pytest

from conveyor.vector import replica as replica_module
from conveyor.vector.replica import Replica
from conveyor.vector.store import Change

DIM = 8


def changes(vectors: np.ndarray, first_seq: int, ids: list[str] | None = None) -> list[Change]:
    ids = ids or [f"v{i}" for i in range(len(vectors))]
    return [
        Change(id=item, seq=first_seq + i, vector=v.astype("<f4").tobytes())
        for i, (item, v) in enumerate(zip(ids, vectors, strict=True))
    ]


def exact_labels(replica: Replica, query: np.ndarray, labels: list[int], k: int) -> list[int]:
    """The k allowed labels nearest `query` (l2), by brute force over what the replica holds."""
    stored = replica.live_vectors(labels)
    distances = ((stored - query) ** 2).sum(1)
    return [labels[i] for i in np.argsort(distances, kind="stable")[:k]]


def test_a_flat_index_drops_a_rewritten_or_deleted_label_at_once() -> None:
    """One at a time, so that no compaction hides a label left behind."""
    data = np.random.default_rng(1).normal(size=(10, DIM)).astype(np.float32)
    replica = Replica("g", DIM, "l2", "flat")
    replica.apply(changes(data, 1))
    replica.apply(changes(data[:1] + 1, 11, ["v0"]))
    assert replica.retired == set(), "nothing is left to hide"
    assert replica.index.ntotal == replica.size == 10
    replica.apply([Change(id="v2", seq=12, vector=None)])
    assert replica.retired == set() and replica.index.ntotal == replica.size == 9
    assert (replica.labels["v0"], replica.applied) == (11, 12)


def test_hnsw_hides_a_few_retired_labels_and_compacts_past_a_fifth() -> None:
    data = np.random.default_rng(2).normal(size=(20, DIM)).astype(np.float32)
    replica = Replica("g", DIM, "l2", "hnsw")
    replica.apply(changes(data, 1))
    replica.apply(changes(data[:2], 21, ["v0", "v1"]))
    assert replica.retired == {1, 2} and replica.index.ntotal == 22, "2 of 22: hidden"
    hits = replica.search(data[:1], 3).rows()[0]
    assert 1 not in [label for label, _ in hits] and hits[0][0] == 21
    replica.apply(changes(data[2:5], 23, ["v2", "v3", "v4"]))
    assert replica.retired == set() and replica.index.ntotal == 20, "5 of 25: rebuilt"
    assert replica.built == "hnsw"


def test_a_filter_allowing_many_labels_searches_the_index_and_finds_the_best(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replica_module, "EXACT_BELOW", 4)
    data = np.random.default_rng(3).normal(size=(60, DIM)).astype(np.float32)
    replica = Replica("g", DIM, "l2", "hnsw")
    replica.apply(changes(data, 1))
    allowed = list(range(1, 61, 3))
    queries = data[[0, 7]] + 0.01
    hits = replica.search(queries, 5, allowed=allowed).rows()
    for query, row in zip(queries, hits, strict=True):
        assert [label for label, _ in row] == exact_labels(replica, query, allowed, 5)


def test_a_filtered_ivf_search_that_misses_falls_back_to_exactly_k(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """nprobe=1 reaches one list; allowed labels in other lists are found by exact search."""
    monkeypatch.setattr(replica_module, "EXACT_BELOW", 4)
    monkeypatch.setattr(replica_module, "IVF_MIN_TRAIN", 64)
    rng = np.random.default_rng(4)
    centres = rng.normal(scale=20, size=(8, DIM))
    data = (centres[np.arange(256) % 8] + rng.normal(size=(256, DIM))).astype(np.float32)
    replica = Replica("g", DIM, "l2", "ivf")
    replica.apply(changes(data, 1))
    assert replica.built == "ivf"
    allowed = [label for label in range(1, 257) if (label - 1) % 8 in (3, 5)][:40]
    query = centres[0].astype(np.float32)[None, :]
    [row] = replica.search(query, 6, allowed=allowed, nprobe=1).rows()
    assert [label for label, _ in row] == exact_labels(replica, query[0], allowed, 6)
