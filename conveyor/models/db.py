"""Engines: one per database URL and process, rebuilt after a fork."""

from __future__ import annotations

import os
import threading

from sqlalchemy import Engine, create_engine

_engines: dict[tuple[str, int], Engine] = {}
_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """The shared engine for `url` in this process; a forked child gets its own."""
    key = (url, os.getpid())
    with _lock:
        _forget_inherited()
        engine = _engines.get(key)
        if engine is None:
            engine = create_engine(url, pool_size=8, max_overflow=16, pool_recycle=1800)
            _engines[key] = engine
        return engine


def _forget_inherited() -> None:
    """Drop a parent's engines without closing its connections, which the parent still uses."""
    for key in [k for k in _engines if k[1] != os.getpid()]:
        _engines.pop(key).dispose(close=False)


def dispose_engines() -> None:
    """Close every pooled connection of this process (at shutdown)."""
    with _lock:
        for (_, pid), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
        _engines.clear()
