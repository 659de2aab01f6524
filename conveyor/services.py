"""Service objects built once per process from the settings: caches, memory, vector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis

from conveyor.config import Settings
from conveyor.forksafe import ProcessCache
from conveyor.tls import TLS, cache_ssl

T = TypeVar("T")
_built: ProcessCache[tuple[str, int], tuple[Settings, Any]] = ProcessCache()


def per_process(kind: str, settings: Settings, build: Callable[[], T]) -> T:
    """The `kind` object for these settings in this process; a forked child builds its own.

    The settings are kept alongside, so their id is never reused for other settings. Building
    one service may build another (memory uses vector).
    """
    found = _built.get((kind, id(settings)), lambda: (settings, build()))
    return cast(T, found[1])


def cache_client(url: str | None, tls: TLS | None = None) -> redis.Redis[bytes] | None:
    """A Redis client for caches on `url`, or None.

    Short timeouts: a cache that does not answer quickly is treated as absent.
    """
    return redis_client(url, tls, 0.5, 0.5)


def redis_client(
    url: str | None, tls: TLS | None, timeout: float, connect_timeout: float
) -> redis.Redis[bytes] | None:
    """A Redis client on `url` (redis://, rediss://, redis+socket://), or None without one.

    A rediss:// URL verifies the server as `tls` says (CERT_REQUIRED unless relaxed).
    """
    if not url:
        return None
    url = url.replace("redis+socket://", "unix://", 1)
    ssl_options = cache_ssl(tls or TLS(), url)
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=connect_timeout, **ssl_options
    )
