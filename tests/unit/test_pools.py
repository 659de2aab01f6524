"""Pools: the queue each pool's agents go to, and the queues its workers consume."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from conveyor.config import load_settings
from conveyor.pools import BUILTIN_POOLS, CATCH_ALL_QUEUE, Pool


def test_catch_all_queue_is_celerys_default() -> None:
    assert CATCH_ALL_QUEUE == "celery"


@pytest.mark.parametrize("prefix", ["", "staging.", "t-1_"])
def test_queue_name_is_prefix_plus_pool_name(prefix: str) -> None:
    assert Pool(name="vector").queue(prefix) == f"{prefix}vector"


@pytest.mark.parametrize("name", ["memory", "vector", "analytics", "gpu"])
def test_other_pools_consume_only_their_own_queue(name: str) -> None:
    assert Pool(name=name).queues("p.") == [f"p.{name}"]


@pytest.mark.parametrize("prefix", ["", "p."])
def test_default_pool_also_consumes_the_catch_all_queue(prefix: str) -> None:
    queues = Pool(name="default").queues(prefix)
    assert queues == [f"{prefix}default", "celery"]


def test_catch_all_queue_is_never_prefixed() -> None:
    settings = load_settings(queue_prefix="ci-42.")
    consumed = [q for pool in settings.pools.values() for q in pool.queues(settings.queue_prefix)]
    assert consumed.count("celery") == 1
    assert sorted(q for q in consumed if q != "celery") == sorted(
        f"ci-42.{name}" for name in BUILTIN_POOLS
    )


def test_builtin_pools() -> None:
    assert set(BUILTIN_POOLS) == {"default", "io", "memory", "vector", "analytics"}
    assert all(pool.name == name for name, pool in BUILTIN_POOLS.items())
    assert BUILTIN_POOLS["memory"].kind == "threads"


def test_the_io_pool_keeps_a_thousand_runs_in_flight_per_worker() -> None:
    io = BUILTIN_POOLS["io"]
    assert (io.kind, io.concurrency) == ("asyncio", 1000)
    assert io.concurrency * io.prefetch_multiplier == 1000, "prefetch: no more than its slots"


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "Upper"},
        {"name": "9lives"},
        {"name": "ok", "concurrency": 0},
        {"name": "ok", "kind": "gevent"},
        {"name": "ok", "unknown": 1},
        {"name": "ok", "max_memory_per_child_kb": 10},
    ],
)
def test_invalid_pool_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Pool.model_validate(fields)


def test_an_asyncio_pool_defaults_to_1000_slots_and_allows_10000() -> None:
    assert Pool(name="io", kind="asyncio").concurrency == 1000
    assert Pool(name="io", kind="asyncio", concurrency=10_000).concurrency == 10_000
    with pytest.raises(ValidationError, match="10000"):
        Pool(name="io", kind="asyncio", concurrency=10_001)


def test_process_and_thread_pools_stay_at_512_slots() -> None:
    assert Pool(name="p", concurrency=512).concurrency == 512
    with pytest.raises(ValidationError, match="concurrency 513 is above 512 for a threads pool"):
        Pool(name="p", kind="threads", concurrency=513)


def test_an_asyncio_worker_runs_celerys_pool_hook_not_a_pool_flag() -> None:
    from conveyor.workers.aio_pool import ALIAS, AsyncIOPool
    from conveyor.workers.boot import worker_argv

    app = SimpleNamespace(
        settings=SimpleNamespace(pool=lambda name: Pool(name=name, kind="asyncio"), queue_prefix="")
    )
    argv = worker_argv(app, "io")  # type: ignore[arg-type]
    assert "--pool" not in argv and argv[argv.index("--concurrency") + 1] == "1000"
    module, name = ALIAS.split(":")
    assert getattr(importlib.import_module(module), name) is AsyncIOPool
