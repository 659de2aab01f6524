"""Built-in agents of the vector pool: thin bindings of conveyor.vector's VectorService."""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_init, worker_process_init

from conveyor.agents import agent
from conveyor.context import current_run
from conveyor.vector import VectorService, service_for
from conveyor.vector import schema as v

POOL = "vector"


def _service() -> VectorService:
    return service_for(current_run().app.settings)


def _faiss_threads(concurrency: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, concurrency))


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """A prefork child sets faiss's threads before faiss is first used (never in the parent)."""
    from celery import current_app

    from conveyor.vector.replica import set_faiss_threads

    set_faiss_threads(_faiss_threads(int(current_app.conf.worker_concurrency or 1)))


@worker_init.connect
def _in_main_process(sender: Any = None, **_: Any) -> None:
    """A threads or solo worker runs faiss in its main process: set its threads there."""
    pool = str(getattr(sender, "pool_cls", ""))
    if "prefork" not in pool and "processes" not in pool:
        from conveyor.vector.replica import set_faiss_threads

        set_faiss_threads(_faiss_threads(int(getattr(sender, "concurrency", 1) or 1)))


@agent(name="vector.create_collection", pool=POOL)
def create_collection(request: v.CreateCollection) -> v.Collection:
    """Create a collection (name, embedder, dim, metric, index kind)."""
    return _service().create_collection(request)


@agent(name="vector.drop_collection", pool=POOL)
def drop_collection(request: v.DropCollection) -> v.Dropped:
    """Drop a collection and all its vectors."""
    return _service().drop_collection(request)


@agent(name="vector.upsert", pool=POOL)
def upsert(request: v.Upsert) -> v.Upserted:
    """Insert or replace a batch of vectors (or texts to embed) atomically."""
    return _service().upsert(request)


@agent(name="vector.delete", pool=POOL)
def delete(request: v.Delete) -> v.Deleted:
    """Delete vectors by id (tombstones)."""
    return _service().delete(request)


@agent(name="vector.search", pool=POOL, idempotent=True)
def search(request: v.Search) -> v.SearchResult:
    """k nearest neighbours of a batch of queries, with metadata filters."""
    return _service().search(request)


@agent(name="vector.stats", pool=POOL, idempotent=True)
def stats(request: v.StatsRequest) -> v.Stats:
    """Items, tombstones and this worker's replica of a collection."""
    return _service().stats(request)
