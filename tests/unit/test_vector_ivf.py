"""IVF search breadth: nprobe per search and per collection, the default rule, retraining."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conveyor.vector.embedders import HashingEmbedder
from conveyor.vector.replica import IVF_MIN_TRAIN, Replica, default_nprobe, load_faiss
from conveyor.vector.schema import Collection, Search, encode_vector
from conveyor.vector.service import VectorService
from conveyor.vector.store import Change
from tests.support.vectors import clustered


def _changes(vectors: np.ndarray) -> list[Change]:
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    return [Change(id=f"v{i}", seq=i + 1, vector=rows[i].tobytes()) for i in range(len(rows))]


def _replicas(data: np.ndarray) -> tuple[Replica, Replica]:
    """A flat (exact) and an ivf replica of the same vectors."""
    flat, ivf = (
        Replica("g", data.shape[1], "cosine", "flat"),
        Replica("g", data.shape[1], "cosine", "ivf"),
    )
    flat.apply(_changes(data))
    ivf.apply(_changes(data))
    assert ivf.built == "ivf"
    return flat, ivf


def _nlist(replica: Replica) -> int:
    return int(load_faiss().extract_index_ivf(replica.index.index).nlist)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(a) & set(b)) for a, b in zip(found.tolist(), exact.tolist(), strict=True)]
    return sum(hits) / exact.size


def _clustered(count: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return clustered(count, 40, dim, clusters=30, spread=0.6, seed=seed)


def test_nprobe_of_every_list_gives_exactly_the_exact_result() -> None:
    data, queries = _clustered(1500, 16, seed=4)
    flat, ivf = _replicas(data)
    exact = flat.search(queries, 10).labels
    nlist = _nlist(ivf)
    assert nlist == 38
    assert np.array_equal(ivf.search(queries, 10, nprobe=nlist).labels, exact)
    assert np.array_equal(ivf.search(queries, 10, nprobe=4096).labels, exact), "capped at nlist"
    narrow = ivf.search(queries, 10, nprobe=1).labels
    assert _recall(narrow, exact) < 0.9, "one list of 38 misses neighbours"


def _topical_texts(count: int, seed: int) -> list[str]:
    """Texts of 12 to 60 words from a made-up vocabulary: 70 % from one of 40 topics of 50
    words, the rest Zipf-distributed over all 4000 (hashing embeddings of these trade recall
    for nprobe about as the docstrings of benchmarks/ivf_recall.py do)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(4000)]
    zipf = 1 / np.arange(1, len(vocab) + 1)
    topics = [rng.choice(len(vocab), 50, replace=False) for _ in range(40)]
    texts = []
    for _ in range(count):
        size = int(rng.integers(12, 60))
        own = rng.choice(topics[rng.integers(len(topics))], size)
        common = rng.choice(len(vocab), size, p=zipf / zipf.sum())
        words = np.where(rng.random(size) < 0.7, own, common)
        texts.append(" ".join(vocab[w] for w in words))
    return texts


def test_the_default_nprobe_keeps_recall_at_the_smallest_ivf_size() -> None:
    texts = _topical_texts(IVF_MIN_TRAIN, seed=0)
    embedder = HashingEmbedder()
    picks = np.random.default_rng(1).choice(len(texts), 300, replace=False)
    queries = embedder.embed([" ".join(texts[i].split()[:12]) for i in picks])
    flat, ivf = _replicas(embedder.embed(texts))
    exact = flat.search(queries, 10).labels
    assert _nlist(ivf) == 32
    assert _recall(ivf.search(queries, 10).labels, exact) >= 0.95
    assert _recall(ivf.search(queries, 10, nprobe=32 // 8).labels, exact) < 0.8, (
        "the old rule (an eighth of the lists) misses on this data"
    )


def test_the_default_nprobe_grows_with_lists_and_k_and_stays_within_the_lists() -> None:
    assert [default_nprobe(n, 10) for n in (1, 32, 44, 316)] == [1, 21, 28, 173]
    assert default_nprobe(32, 1) == default_nprobe(32, 10) < default_nprobe(32, 100) <= 32
    assert all(1 <= default_nprobe(n, k) <= n for n in range(1, 400) for k in (1, 10, 1000))


def test_an_ivf_index_is_retrained_once_it_doubles_past_its_lists() -> None:
    data = np.random.default_rng(2).normal(size=(2100, 8)).astype(np.float32)
    replica = Replica("g", 8, "l2", "ivf")
    changes = _changes(data)
    replica.apply(changes[:1024])
    assert _nlist(replica) == 32
    replica.apply(changes[1024:2047])
    assert _nlist(replica) == 32, "not yet twice the 32 x 32 vectors its lists suit"
    replica.apply(changes[2047:])
    assert (_nlist(replica), replica.size) == (45, 2100)
    best = replica.search(data[2099:], 1, nprobe=45).rows()[0][0]
    assert best[0] == 2100 and best[1] == pytest.approx(0.0, abs=1e-4)


class _Store:
    """The reads VectorService.search makes of its store, over one in-memory collection."""

    def __init__(self, collection: Collection, changes: list[Change]) -> None:
        self.collection, self.changes = collection, changes

    def get(self, op: str, name: str) -> Collection:
        return self.collection

    def head(self, name: str) -> tuple[str, int]:
        return "g", len(self.changes)

    def catch_up(self, name: str, seq: int) -> tuple[str, list[Change]]:
        return "g", [c for c in self.changes if c.seq > seq]


@pytest.mark.parametrize(
    ("collection", "request_", "used"),
    [
        ({}, {}, (None, None)),
        ({"nprobe": 3, "ef_search": 50}, {}, (50, 3)),
        ({"nprobe": 3, "ef_search": 50}, {"nprobe": 7, "ef_search": 60}, (60, 7)),
        ({}, {"nprobe": 7}, (None, 7)),
    ],
)
def test_a_collections_search_defaults_apply_unless_the_search_names_its_own(
    monkeypatch: pytest.MonkeyPatch,
    collection: dict[str, int],
    request_: dict[str, int],
    used: tuple[int | None, int | None],
) -> None:
    data, queries = _clustered(1100, 8, seed=5)
    spec = Collection(
        name="c", dim=8, metric="cosine", embedder="hashing", index="ivf", last_seq=0,
        **collection,
    )  # fmt: skip
    service = VectorService(_Store(spec, _changes(data)))  # type: ignore[arg-type]
    seen: list[tuple[Any, ...]] = []
    search = Replica.search

    def spy(self: Replica, *args: Any) -> Any:
        seen.append(args[3:])
        return search(self, *args)

    monkeypatch.setattr(Replica, "search", spy)
    matrix = {"dim": 8, "b64": encode_vector(queries[:2])}
    request = Search.model_validate({"collection": "c", "matrix": matrix, "include": []} | request_)
    result = service.search(request)
    assert seen == [used]
    assert len(result.ids) == 2 and all(len(row) == 10 for row in result.ids)
