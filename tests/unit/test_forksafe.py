"""Per-process state across os.fork: the child builds its own, the parent keeps its own.

A prefork worker forks its children from a parent that may already hold engines, clients,
threads and a loop; sharing any of them across the fork shares sockets and pools.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.app import ConveyorApp
from conveyor.background import background_writer
from conveyor.forksafe import ProcessCache, ProcessLocal
from conveyor.models.db import engine_for
from conveyor.services import per_process
from conveyor.workers.asyncloop import process_loop


def in_child(probe: Callable[[], Any]) -> Any:
    """What `probe` returns when run in a forked child (sent back as JSON)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            os.write(write, json.dumps(probe()).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        sent = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the probe failed in the child"
    return json.loads(sent)


def test_a_forked_child_builds_its_own_value_and_the_parent_keeps_its() -> None:
    local = ProcessLocal(object)
    parent = local.get()

    def probe() -> dict[str, bool]:
        mine = local.get()
        return {"fresh": mine is not parent, "kept": local.get() is mine}

    assert in_child(probe) == {"fresh": True, "kept": True}
    assert local.get() is parent


def test_a_child_detaches_each_inherited_value_and_builds_anew() -> None:
    detached: list[str] = []
    cache: ProcessCache[str, list[str]] = ProcessCache(on_fork=lambda v: detached.append(v[0]))
    a, b = cache.get("a", lambda: ["a"]), cache.get("b", lambda: ["b"])

    def probe() -> dict[str, Any]:
        return {"detached": sorted(detached), "fresh": cache.get("a", lambda: ["a"]) is not a}

    assert in_child(probe) == {"detached": ["a", "b"], "fresh": True}
    assert (detached, cache.get("a", list), cache.get("b", list)) == ([], a, b)


def test_an_inherited_engine_gets_a_fresh_pool_in_the_child_only(tmp_path: Path) -> None:
    """SQLAlchemy's advice for os.fork: dispose(close=False) in the child, never close."""
    engine = engine_for(f"sqlite:///{tmp_path / 'fork.db'}")
    with engine.connect():
        pass
    pool = engine.pool

    def probe() -> dict[str, bool]:
        return {
            "own engine": engine_for(str(engine.url)) is not engine,
            "inherited pool replaced": engine.pool is not pool,
        }

    assert in_child(probe) == {"own engine": True, "inherited pool replaced": True}
    assert engine_for(str(engine.url)) is engine
    assert engine.pool is pool


def test_every_per_process_singleton_is_rebuilt_in_the_child(fake_app: ConveyorApp) -> None:
    settings = fake_app.settings
    singletons: dict[str, Callable[[], object]] = {
        "writer": background_writer,
        "loop": process_loop,
        "service": lambda: per_process("unit.fork", settings, object),
        "runs": lambda: fake_app.runs,
        "recorder": lambda: fake_app.recorder,
    }
    parent = {name: get() for name, get in singletons.items()}

    def probe() -> dict[str, bool]:
        return {name: get() is not parent[name] for name, get in singletons.items()}

    assert in_child(probe) == dict.fromkeys(singletons, True)
    assert {name: get() for name, get in singletons.items()} == parent
