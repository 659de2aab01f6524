"""Per-process state: what a forked child must build afresh instead of inheriting.

Engines, Redis clients, threads and event loops hold sockets or threads that a forked child
must not share with its parent. Each lives in a `ProcessCache` (or a `ProcessLocal`); one
at-fork hook empties them all in the child, which then builds its own on first use, while
the parent keeps what it has.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_caches: weakref.WeakSet[ProcessCache[Any, Any]] = weakref.WeakSet()


class ProcessCache(Generic[K, V]):
    """Values built once per key and process; a forked child starts empty.

    In the child, `on_fork` receives each inherited value, e.g. to detach it from the
    parent's sockets without closing them. The lock is re-entrant, so building one value
    may build another.
    """

    def __init__(self, on_fork: Callable[[V], object] | None = None) -> None:
        self._on_fork = on_fork
        self._values: dict[K, V] = {}
        self._lock = threading.RLock()
        _caches.add(self)

    def get(self, key: K, build: Callable[[], V]) -> V:
        """The value for `key` in this process, built on first use."""
        try:
            return self._values[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._values:
                self._values[key] = build()
            return self._values[key]

    def clear(self) -> list[V]:
        """Forget every value of this process and return them (to close them, say)."""
        with self._lock:
            values = list(self._values.values())
            self._values.clear()
            return values

    def _forget_inherited(self) -> list[V]:
        """In a forked child: start empty, with a lock no parent thread can be holding."""
        inherited = list(self._values.values())
        self._values = {}
        self._lock = threading.RLock()
        return inherited

    def _detach(self, inherited: list[V]) -> None:
        if self._on_fork is not None:
            for value in inherited:
                self._on_fork(value)


class ProcessLocal(Generic[V]):
    """One value per process, built on first use; a forked child builds its own."""

    def __init__(
        self, build: Callable[[], V], on_fork: Callable[[V], object] | None = None
    ) -> None:
        self._build = build
        self._cache: ProcessCache[None, V] = ProcessCache(on_fork)

    def get(self) -> V:
        return self._cache.get(None, self._build)


def _after_fork_in_child() -> None:
    """Empty every cache before any `on_fork` runs, so one that fails leaves none shared."""
    inherited = [(cache, cache._forget_inherited()) for cache in list(_caches)]
    for cache, values in inherited:
        cache._detach(values)


os.register_at_fork(after_in_child=_after_fork_in_child)
