"""The vector service end to end: vector.* agents on two real vector-pool workers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery
import numpy as np
import pytest

from conveyor import Client, ConveyorApp, InvalidInput, RunFailed, RunStatus
from conveyor.blobs import BLOB_FROM_BYTES
from conveyor.vector.schema import encode_vector
from tests.support.vectors import clustered
from tests.support.workers import WorkerProcess


@pytest.fixture(scope="module")
def vector_workers(
    redis_app: ConveyorApp, redis_env: dict[str, str], log_dir: Path
) -> Iterator[list[WorkerProcess]]:
    """Two vector workers on one queue, as KEDA would run them."""
    workers = [WorkerProcess(redis_app, redis_env, "vector", log_dir) for _ in range(2)]
    try:
        for w in workers:
            w.wait_ready()
        yield workers
    finally:
        for w in workers:
            w.stop()


@pytest.fixture
def vclient(client: Client, vector_workers: list[WorkerProcess]) -> Client:
    return client


@pytest.fixture
def name() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


BLOB = "conveyor:blob:" + "0" * 32


def _blob_keys(client: Client) -> list[bytes]:
    blobs = client.vector._blobs
    assert blobs is not None, "a Redis broker keeps blobs"
    return list(blobs.client.scan_iter("conveyor:blob:*"))


def _exact(model: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    ids = sorted(model)
    data = np.stack([model[i] for i in ids])
    data = data / np.linalg.norm(data, axis=1, keepdims=True)
    scores = data @ (query / np.linalg.norm(query))
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


def test_writes_through_one_worker_are_read_through_the_other(vclient: Client, name: str) -> None:
    rng = np.random.default_rng(11)
    vclient.vector.create_collection(name, dim=16, index="flat")
    model: dict[str, np.ndarray] = {}
    upsert_runs, search_runs = [], []
    for round_ in range(12):
        batch = {f"r{round_}-{i}": rng.normal(size=16).astype(np.float32) for i in range(25)}
        run_id = vclient.vector.upsert.submit(
            name, [{"id": i, "vector": v.tolist()} for i, v in batch.items()]
        ).id
        upserted = vclient.result(run_id, timeout=60)
        upsert_runs.append(run_id)
        model.update(batch)
        doomed = sorted(model)[:3]
        deleted = vclient.vector.delete(name, doomed)
        for i in doomed:
            del model[i]
        query = rng.normal(size=16).astype(np.float32)
        sid = vclient.vector.search.submit(name, [query.tolist()], k=10, min_seq=deleted.seq).id
        result = vclient.result(sid, timeout=60)
        search_runs.append(sid)
        assert result["seq"] >= max(upserted["seq"], deleted.seq)
        assert result["ids"][0] == _exact(model, query, 10)
    served = {vclient.get(r).worker for r in search_runs} | {
        vclient.get(r).worker for r in upsert_runs
    }
    assert len(served) == 2, f"both workers took part: {served}"


def _search_on_both_workers(
    vclient: Client, name: str, query: np.ndarray, min_seq: int
) -> list[dict[str, Any]]:
    """Results of one query from each of the two vector workers (both hold a replica)."""
    results: dict[str, dict[str, Any]] = {}
    for _ in range(20):
        runs = [
            vclient.vector.search.submit(name, [query.tolist()], k=3, min_seq=min_seq).id
            for _ in range(4)
        ]
        for run_id in runs:
            result = vclient.result(run_id, timeout=60)
            results.setdefault(str(vclient.get(run_id).worker), result)  # type: ignore[union-attr]
        if len(results) == 2:
            return list(results.values())
    raise AssertionError(f"only {sorted(results)} served the searches")


def test_a_rewrite_or_delete_of_an_existing_id_is_seen_by_every_worker(
    vclient: Client, name: str
) -> None:
    """Both workers load the collection, then an existing id is rewritten and another deleted:
    each worker's replica must catch up on both (they travel as new seqs of old rows)."""
    rng = np.random.default_rng(3)
    vectors = {f"i{n}": rng.normal(size=8).astype(np.float32) for n in range(30)}
    vclient.vector.create_collection(name, dim=8, index="flat")
    first = vclient.vector.upsert(
        name, [{"id": i, "vector": v.tolist()} for i, v in vectors.items()]
    )
    target = vectors["i5"]
    for result in _search_on_both_workers(vclient, name, target, first.seq):
        assert result["ids"][0][0] == "i5"

    away = -target
    rewritten = vclient.vector.upsert(name, [{"id": "i5", "vector": away.tolist()}])
    for result in _search_on_both_workers(vclient, name, target, rewritten.seq):
        assert result["ids"][0][0] != "i5", "the rewritten vector no longer matches"
    for result in _search_on_both_workers(vclient, name, away, rewritten.seq):
        assert result["ids"][0][0] == "i5"

    runner_up = _exact({k: v for k, v in vectors.items() if k != "i5"}, target, 1)[0]
    deleted = vclient.vector.delete(name, [runner_up])
    assert deleted.deleted == 1
    for result in _search_on_both_workers(vclient, name, target, deleted.seq):
        assert runner_up not in result["ids"][0]


def test_texts_are_embedded_and_found_by_text_with_filters(vclient: Client, name: str) -> None:
    vclient.vector.create_collection(name)
    docs = {
        "a": ("how to bake sourdough bread at home", {"kind": "recipe", "year": 2024}),
        "b": ("sourdough starter feeding schedule", {"kind": "recipe", "year": 2020}),
        "c": ("quarterly tax filing for small companies", {"kind": "finance", "year": 2024}),
        "d": ("baking bread in a dutch oven", {"kind": "recipe", "year": 2023}),
    }
    vclient.vector.upsert(name, [{"id": i, "text": t, "metadata": m} for i, (t, m) in docs.items()])
    result = vclient.vector.search(name, ["bake sourdough bread"], k=2)
    assert result.results[0][0].id == "a"
    assert result.results[0][0].text == docs["a"][0]
    assert result.results[0][0].metadata == docs["a"][1]
    recent = vclient.vector.search(
        name, ["bread"], k=10, where={"kind": "recipe", "year": {"gte": 2023}}
    )
    assert {m.id for m in recent.results[0]} == {"a", "d"}
    compact = vclient.vector.search(name, ["bake sourdough bread"], k=2, include=())
    assert compact.ids == [[m.id for m in result.results[0]]]
    assert compact.scores == [[m.score for m in result.results[0]]]
    assert (compact.metadata, compact.texts, compact.vectors) == (None, None, None)
    only = vclient.vector.search(name, ["bake sourdough bread"], k=1, include=["vector"])
    assert only.texts is None and only.vectors is not None and len(only.vectors[0][0]) == 384
    stats = vclient.vector.stats(name)
    assert (stats.items, stats.collection.dim, stats.collection.embedder) == (4, 384, "hashing")


def test_a_seeded_corpus_keeps_hnsw_recall_above_the_floor(vclient: Client, name: str) -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(25, 32))
    data = centres[rng.integers(0, 25, 3000)] + 0.35 * rng.normal(size=(3000, 32))
    vclient.vector.create_collection(name, dim=32, index="hnsw")
    for start in range(0, 3000, 1000):
        vclient.vector.upsert(
            name,
            [
                {"id": str(i), "vector": data[i].tolist(), "metadata": {"rare": i % 300 == 0}}
                for i in range(start, start + 1000)
            ],
        )
    queries = centres[rng.integers(0, 25, 40)] + 0.35 * rng.normal(size=(40, 32))
    result = vclient.vector.search(name, [q.tolist() for q in queries], k=10)
    model = {str(i): data[i].astype(np.float32) for i in range(3000)}
    hits = sum(
        len({m.id for m in row} & set(_exact(model, q.astype(np.float32), 10)))
        for row, q in zip(result.results, queries, strict=True)
    )
    assert hits / 400 >= 0.95
    one_by_one = vclient.submit(
        "vector.search",
        {"collection": name, "queries": [{"vector": q.tolist()} for q in queries[:5]], "k": 10},
    )
    assert vclient.result(one_by_one, timeout=60)["ids"] == result.ids[:5]
    rare = vclient.vector.search(name, [queries[0].tolist()], k=20, where={"rare": True})
    assert sorted(int(m.id) for m in rare.results[0]) == list(range(0, 3000, 300))
    assert vclient.vector.stats(name).replica_kind == "hnsw"


def test_nprobe_widens_an_ivf_search_per_search_and_per_collection(
    vclient: Client, name: str
) -> None:
    data, queries = clustered(1200, 20, 16, clusters=20, spread=0.6, seed=21)
    narrow = f"{name}-narrow"
    vclient.vector.create_collection(name, dim=16, index="ivf")
    made = vclient.vector.create_collection(narrow, dim=16, index="ivf", nprobe=1)
    assert (made.nprobe, made.ef_search) == (1, None)
    items = [{"id": str(i), "vector": data[i].tolist()} for i in range(1200)]
    for collection in (name, narrow):
        vclient.vector.upsert(collection, items)
    model = {str(i): data[i] for i in range(1200)}
    exact = [_exact(model, q, 10) for q in queries]

    def ids(collection: str, **kwargs: int) -> list[list[str]]:
        return vclient.vector.search(collection, queries, k=10, include=(), **kwargs).ids

    assert ids(name, nprobe=4096) == exact, "every list searched: the exact answer"
    one_list = ids(name, nprobe=1)
    assert one_list != exact
    assert ids(narrow) == one_list, "the collection's nprobe applies to a search naming none"
    assert ids(narrow, nprobe=4096) == exact, "a search's own nprobe comes first"
    stats = vclient.vector.stats(narrow)
    assert (stats.replica_kind, stats.collection.nprobe) == ("ivf", 1)
    with pytest.raises(RunFailed, match=r"already exists with nprobe 1 \(not 8\)"):
        vclient.vector.create_collection(narrow, dim=16, index="ivf", nprobe=8, exist_ok=True)
    assert vclient.vector.create_collection(narrow, dim=16, index="ivf", nprobe=1, exist_ok=True)
    vclient.vector.drop_collection(narrow)


@pytest.mark.parametrize(
    ("agent", "payload", "field", "words"),
    [
        (
            "vector.upsert",
            {"items": [{"id": "a", "vector": [1.0, 2.0]}]},
            "items.0.vector",
            "dim 4",
        ),
        ("vector.upsert", {"items": [{"id": "a", "text": "  "}]}, "items.0.text", "empty"),
        (
            "vector.upsert",
            {"items": [{"id": "a", "vector": [1, 2, 3, 4]}, {"id": "a", "vector": [1, 2, 3, 4]}]},
            "items",
            "appears twice",
        ),
        ("vector.search", {"queries": [{"vector": [1, 2, 3, 4]}], "k": 0}, "k", "greater"),
        ("vector.search", {"queries": [{"vector": [1, 2, 3, 4]}], "k": 5000}, "k", "1000"),
        ("vector.search", {"queries": [{"vector": [1, 2, 3]}]}, "queries.0.vector", "dim 4"),
        ("vector.search", {"queries": [{"vector": [1, 2, 3, 4]}], "nprobe": 0}, "nprobe", "1"),
        (
            "vector.search",
            {"queries": [{"vector": [1, 2, 3, 4]}], "nprobe": 5000},
            "nprobe",
            "less than or equal to 4096",
        ),
        (
            "vector.search",
            {"matrix": {"dim": 4, "blob": "session:secret"}},
            "matrix.blob",
            "should match pattern",
        ),
        (
            "vector.search",
            {"matrix": {"dim": 4, "b64": encode_vector([1, 2, 3, 4]), "blob": BLOB}},
            "matrix",
            "not both",
        ),
        (
            "vector.search",
            {"matrix": {"dim": 3, "b64": encode_vector([1, 2, 3, 4, 5, 6])}},
            "matrix.dim",
            "dim 4",
        ),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    vclient: Client, name: str, agent: str, payload: dict[str, object], field: str, words: str
) -> None:
    vclient.vector.create_collection(name, dim=4, embedder="hashing")
    full = {"collection": name, **payload}
    plain = celery.Celery("plain", broker=vclient.app.conf.broker_url)
    try:
        vclient.submit(agent, full)
    except InvalidInput as exc:
        assert f"{field}:" in str(exc) and words in str(exc)
    sent = plain.send_task(agent, kwargs=full)
    run = vclient.wait(sent.id, timeout=60)
    assert run.status is RunStatus.REJECTED and run.attempts == 1
    assert field in (run.error_message or "") and words in (run.error_message or "")
    assert vclient.vector.stats(name).items == 0


def test_nan_and_unknown_collections_are_refused(vclient: Client, name: str) -> None:
    with pytest.raises(InvalidInput, match="finite"):
        vclient.submit("vector.upsert", {"collection": name, "items": [
            {"id": "a", "vector": [float("nan"), 1.0]}
        ]})  # fmt: skip
    with pytest.raises(Exception, match=f"unknown collection '{name}'"):
        vclient.vector.search(name, ["anything"])
    assert vclient.vector.drop_collection(name, missing_ok=True).dropped is False


def _maps_faiss(pid: int) -> bool:
    return "faiss" in Path(f"/proc/{pid}/maps").read_text()


def test_faiss_is_loaded_only_in_the_forked_child(
    vclient: Client, name: str, vector_workers: list[WorkerProcess]
) -> None:
    vclient.vector.create_collection(name, dim=4)
    vclient.vector.upsert(name, [{"id": "a", "vector": [1, 0, 0, 0]}])
    for _ in range(4):
        assert vclient.vector.search(name, [[1, 0, 0, 0]], k=1).results[0][0].id == "a"
    for worker in vector_workers:
        children = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children")
        kids = [int(pid) for pid in children.read_text().split()]
        assert kids, "a prefork worker has a child process"
        assert not _maps_faiss(worker.proc.pid), "the parent never loads faiss"
        assert all(_maps_faiss(pid) for pid in kids), "each child loaded faiss after the fork"


def test_a_dropped_and_recreated_collection_starts_empty(vclient: Client, name: str) -> None:
    vclient.vector.create_collection(name, dim=4)
    vclient.vector.upsert(name, [{"id": "old", "vector": [1, 0, 0, 0]}])
    for _ in range(3):
        assert vclient.vector.search(name, [[1, 0, 0, 0]], k=5).results[0][0].id == "old"
    assert vclient.vector.drop_collection(name).dropped
    vclient.vector.create_collection(name, dim=4)
    vclient.vector.upsert(name, [{"id": "new", "vector": [1, 0, 0, 0]}])
    for _ in range(3):
        assert [m.id for m in vclient.vector.search(name, [[1, 0, 0, 0]], k=5).results[0]] == [
            "new"
        ]


def test_bulky_search_inputs_are_not_kept_in_agent_runs(vclient: Client, name: str) -> None:
    vclient.vector.create_collection(name, dim=4)
    run_id = vclient.vector.search.submit(name, [[1, 0, 0, 0]], k=1).id
    run = vclient.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED
    assert run.input == {"$omitted": "input not recorded for this agent"}


def test_a_large_batch_travels_beside_its_message_and_is_dropped_when_done(
    vclient: Client, name: str
) -> None:
    rng = np.random.default_rng(5)
    data = rng.normal(size=(500, 64)).astype(np.float32)
    vclient.vector.create_collection(name, dim=64, index="flat")
    vclient.vector.upsert(name, [{"id": str(i), "vector": v} for i, v in enumerate(data)])
    queries = rng.normal(size=(300, 64)).astype(np.float32)
    assert queries.nbytes >= BLOB_FROM_BYTES
    stored: list[str] = []
    blobs = vclient.vector._blobs
    assert blobs is not None
    put = blobs.put
    blobs.put = lambda raw: stored.append(put(raw)) or stored[-1]  # type: ignore[method-assign]
    try:
        beside = vclient.vector.search(name, queries, k=5, include=())
    finally:
        del blobs.put
    assert len(stored) == 1, "the batch was left in Redis and the message named its key"
    inside = [vclient.vector.search(name, half, k=5, include=()) for half in np.split(queries, 2)]
    assert len(stored) == 1, "halves of 38 KB travel inside their messages"
    assert beside.ids == inside[0].ids + inside[1].ids
    assert beside.ids[0] == _exact({str(i): v for i, v in enumerate(data)}, queries[0], 5)
    deadline = time.monotonic() + 10
    while blobs.client.exists(stored[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not blobs.client.exists(stored[0]), "the worker drops the blob once the run is done"


def test_a_blob_that_is_gone_rejects_the_run_and_says_why(vclient: Client, name: str) -> None:
    vclient.vector.create_collection(name, dim=4)
    payload = {"collection": name, "matrix": {"dim": 4, "blob": BLOB}}
    run_id = vclient.submit("vector.search", payload)
    run = vclient.wait(run_id, timeout=60)
    assert run.status is RunStatus.REJECTED and run.attempts == 1
    assert "matrix.blob" in (run.error_message or "") and "is gone" in (run.error_message or "")


def test_a_bad_large_batch_or_search_leaves_no_blob_behind(vclient: Client, name: str) -> None:
    vclient.vector.create_collection(name, dim=64)
    queries = np.ones((300, 64), dtype=np.float32)
    queries[7, 3] = np.nan
    before = _blob_keys(vclient)
    with pytest.raises(InvalidInput, match=r"matrix: value 451 is nan"):
        vclient.vector.search(name, queries)
    queries[7, 3] = 1.0
    with pytest.raises(InvalidInput, match="k: Input should be greater than or equal to 1"):
        vclient.vector.search(name, queries, k=0)
    assert _blob_keys(vclient) == before, "a batch stored for a refused submit is deleted"


def test_search_results_are_kept_in_postgresql_not_in_celerys_backend(
    vclient: Client, name: str
) -> None:
    vclient.vector.create_collection(name, dim=4)
    vclient.vector.upsert(name, [{"id": "a", "vector": [1, 0, 0, 0]}])
    search_id = vclient.vector.search.submit(name, [[1, 0, 0, 0]], k=1).id
    assert vclient.result(search_id, timeout=60)["ids"] == [["a"]]
    stats_id = vclient.submit("vector.stats", {"collection": name})
    assert vclient.result(stats_id, timeout=60)["items"] == 1
    backend = vclient.app.backend
    assert backend.get(backend.get_key_for_task(stats_id)) is not None
    assert backend.get(backend.get_key_for_task(search_id)) is None
