"""Engines: one per database URL and process, rebuilt after a fork."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine

from conveyor.forksafe import ProcessCache


def _detach(engine: Engine) -> None:
    """In a forked child: drop the parent's pooled connections without closing them (the
    parent still uses them), as SQLAlchemy advises, in case anything still holds `engine`."""
    engine.dispose(close=False)


_engines: ProcessCache[str, Engine] = ProcessCache(on_fork=_detach)


def engine_for(url: str) -> Engine:
    """The shared engine for `url` in this process; a forked child gets its own."""
    return _engines.get(
        url, lambda: create_engine(url, pool_size=8, max_overflow=16, pool_recycle=1800)
    )


def dispose_engines() -> None:
    """Close every pooled connection of this process (at shutdown)."""
    for engine in _engines.clear():
        engine.dispose()
