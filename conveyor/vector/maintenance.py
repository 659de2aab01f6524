"""`vector.maintain`: catch up, compact and snapshot the replicas of the worker that runs it.

Each vector worker keeps its own replicas and its own snapshots, so a scheduled run
maintains the replicas of whichever worker takes it.
"""

from __future__ import annotations

import time

from conveyor.errors import InvalidInput
from conveyor.vector.schema import (
    CollectionMaintained,
    Maintained,
    MaintainRequest,
    SnapshotRequest,
)
from conveyor.vector.service import VectorService

OP = "vector.maintain"


def maintain(service: VectorService, request: MaintainRequest) -> Maintained:
    """Every collection (or the one named), each caught up from PostgreSQL, rebuilt if it
    has retired labels, then snapshotted. A collection dropped meanwhile is reported and
    skipped; one named in the request that does not exist is refused."""
    started = time.perf_counter()
    names = [request.collection] if request.collection else service.store.names()
    done = []
    for name in names:
        try:
            done.append(_maintain_one(service, name))
        except InvalidInput as exc:
            if request.collection:
                raise
            done.append(CollectionMaintained(collection=name, error=str(exc)))
    return Maintained(collections=done, seconds=round(time.perf_counter() - started, 3))


def _maintain_one(service: VectorService, name: str) -> CollectionMaintained:
    replica = service.replica(OP, name)
    with replica.lock:
        compacted = len(replica.retired)
        if compacted:
            replica.rebuild()
        seq, vectors = replica.applied, replica.size
    if service.snapshot_dir is None:
        return CollectionMaintained(collection=name, seq=seq, vectors=vectors, compacted=compacted)
    written = service.snapshot(SnapshotRequest(collection=name))
    return CollectionMaintained(
        collection=name,
        seq=written.seq,
        vectors=written.vectors,
        compacted=compacted,
        snapshot=written.path,
        bytes=written.bytes,
    )
