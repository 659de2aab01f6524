"""Built-in agents of the vector pool: thin bindings of conveyor.vector's VectorService."""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any, cast

from celery import current_app
from celery.signals import worker_process_init, worker_ready

from conveyor.agents import agent
from conveyor.config import Settings
from conveyor.context import current_run
from conveyor.vector import VectorService, maintenance, service_for
from conveyor.vector import schema as v
from conveyor.vector.replica import set_faiss_threads

POOL = "vector"
log = logging.getLogger(__name__)


def _service() -> VectorService:
    return service_for(current_run().settings)


def _faiss_threads(concurrency: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, concurrency))


def _vector_app() -> Any | None:
    """The current app if it is a conveyor app of the vector pool, else None.

    Duck-typed (its `pool_name` and `settings`): a feature does not import conveyor.app, which
    sits above it.
    """
    app = cast(Any, current_app)._get_current_object()
    if getattr(app, "pool_name", None) == POOL and hasattr(app, "settings"):
        return app
    return None


def _prepare(settings: Settings, concurrency: int) -> None:
    """Give faiss its threads, then load snapshots and catch up every collection."""

    set_faiss_threads(_faiss_threads(concurrency))
    try:
        names = service_for(settings).warm_up()
        log.info("vector replicas ready: %s", ", ".join(names) or "no collections")
    except Exception as exc:
        log.warning("vector warm-up failed, replicas load on first use: %s", exc)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """A prefork child prepares faiss: it is first touched here, after the fork."""
    app = _vector_app()
    if app is not None:
        _prepare(app.settings, int(app.conf.worker_concurrency or 1))


@worker_ready.connect
def _in_main_process(sender: Any = None, **_: Any) -> None:
    """A threads or solo worker runs faiss in its main process: prepare it there."""
    app = _vector_app()
    kind = str(getattr(getattr(sender, "controller", sender), "pool_cls", ""))
    if app is not None and "prefork" not in kind and "processes" not in kind:
        _prepare(app.settings, int(getattr(sender, "concurrency", 1) or 1))


@agent(name="vector.create_collection", pool=POOL)
def create_collection(request: v.CreateCollection) -> v.Collection:
    """Create a collection (name, embedder, dim, metric, index kind)."""
    return _service().create_collection(request)


@agent(name="vector.drop_collection", pool=POOL)
def drop_collection(request: v.DropCollection) -> v.Dropped:
    """Drop a collection and all its vectors."""
    return _service().drop_collection(request)


@agent(name="vector.upsert", pool=POOL, record_input=False)
def upsert(request: v.Upsert) -> v.Upserted:
    """Insert or replace a batch of vectors (or texts to embed) atomically."""
    return _service().upsert(request)


@agent(name="vector.delete", pool=POOL)
def delete(request: v.Delete) -> v.Deleted:
    """Delete vectors by id (tombstones)."""
    return _service().delete(request)


@agent(name="vector.search", pool=POOL, idempotent=True, record_input=False)
def search(request: v.Search) -> v.SearchResult:
    """k nearest neighbours of a batch of queries, with metadata filters."""
    service = _service()
    blob = request.matrix.blob if request.matrix is not None else None
    if blob is not None and service.blobs is not None:
        current_run().on_finished.append(partial(service.blobs.delete, blob))
    return service.search(request)


@agent(name="vector.stats", pool=POOL, idempotent=True)
def stats(request: v.StatsRequest) -> v.Stats:
    """Items, tombstones and this worker's replica of a collection."""
    return _service().stats(request)


@agent(name="vector.snapshot", pool=POOL, idempotent=True)
def snapshot(request: v.SnapshotRequest) -> v.Snapshotted:
    """Write this worker's replica of a collection to disk (atomic, checksummed)."""
    return _service().snapshot(request)


@agent(name="vector.maintain", pool=POOL, idempotent=True)
def maintain(request: v.MaintainRequest) -> v.Maintained:
    """Catch up, compact and snapshot this worker's replicas (scheduled by beat)."""
    return maintenance.maintain(_service(), request)
