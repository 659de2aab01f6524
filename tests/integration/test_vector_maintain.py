"""vector.maintain: catch up, compact retired labels, snapshot every collection."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from conveyor.errors import InvalidInput
from conveyor.models.db import engine_for
from conveyor.vector import CreateCollection, EmbeddingCache, Upsert, VectorService, VectorStore
from conveyor.vector.maintenance import maintain
from conveyor.vector.schema import MaintainRequest
from conveyor.vector.snapshot import load_snapshot

DIM = 8


def items(ids: range, seed: int) -> list[dict[str, object]]:
    data = np.random.default_rng(seed).normal(size=(len(ids), DIM))
    return [{"id": f"v{i}", "vector": row.tolist()} for i, row in zip(ids, data, strict=True)]


def test_maintain_compacts_and_snapshots(database_url: str, tmp_path: Path) -> None:
    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    service = VectorService(VectorStore(engine_for(url)), EmbeddingCache(None), tmp_path)
    name, flat = f"m{uuid.uuid4().hex[:8]}", f"f{uuid.uuid4().hex[:8]}"
    service.create_collection(CreateCollection(name=name, dim=DIM, index="hnsw"))
    service.create_collection(CreateCollection(name=flat, dim=DIM, index="flat"))
    service.upsert(Upsert.model_validate({"collection": name, "items": items(range(100), 1)}))
    service.upsert(Upsert.model_validate({"collection": flat, "items": items(range(5), 2)}))
    service.replica("test", name)
    service.upsert(Upsert.model_validate({"collection": name, "items": items(range(10), 3)}))
    assert len(service.replica("test", name).retired) == 10

    done = maintain(service, MaintainRequest())
    by_name = {c.collection: c for c in done.collections}
    ours = by_name[name]
    assert (ours.compacted, ours.vectors, ours.seq, ours.error) == (10, 100, 110, None)
    assert ours.snapshot is not None and Path(ours.snapshot).exists() and ours.bytes > 0
    assert service.replica("test", name).retired == set()
    assert (by_name[flat].compacted, by_name[flat].vectors) == (0, 5)
    generation = service.store.head(name)
    assert generation is not None
    restored = load_snapshot(tmp_path, name, generation[0])
    assert restored is not None and (restored.applied, restored.size) == (110, 100)

    one = maintain(service, MaintainRequest(collection=flat))
    assert [c.collection for c in one.collections] == [flat]
    with pytest.raises(InvalidInput, match="unknown collection"):
        maintain(service, MaintainRequest(collection=f"missing{uuid.uuid4().hex[:6]}"))
