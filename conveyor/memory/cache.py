"""A Redis cache of recall windows for hot sessions, invalidated by version bumps.

Keys hold a hash of the namespace and session, never the names themselves, so no name can
reach into another's keys. A window is cached under the current versions of its namespace
and session; a write bumps the session's version and a forget the namespace's, so the next
recall misses and reads PostgreSQL: readers see their own writes. A cached window lives at
most `ttl` seconds and never past the first expiry among its items. Any Redis error turns
the cache off for a few seconds and every call goes to PostgreSQL instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime
from typing import Any

import redis

from conveyor.background import background_writer
from conveyor.services import cache_client

log = logging.getLogger(__name__)
PREFIX = "conveyor:memory"
VERSION_TTL = 86400
RETRY_AFTER = 5.0
LOOKUP = """
local versions = redis.call('MGET', KEYS[1], KEYS[2])
local key = ARGV[1] .. ':' .. (versions[1] or '0') .. '.' .. (versions[2] or '0') .. ':' .. ARGV[2]
return {key, redis.call('GET', key)}
"""
"""Read both versions, build the window's key and read it: one round trip."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RecallCache:
    def __init__(self, client: redis.Redis[bytes] | None, ttl: float = 60.0) -> None:
        self.client = client
        self.ttl = ttl
        self._down_until = 0.0
        self._lookup = client.register_script(LOOKUP) if client is not None else None

    @classmethod
    def from_url(cls, url: str | None, ttl: float = 60.0) -> RecallCache:
        """A cache on `url` (redis://, rediss://, redis+socket://), or a disabled one."""

        return cls(cache_client(url), ttl)

    @property
    def enabled(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        log.warning("memory cache unavailable (%s: %s); using PostgreSQL", what, exc)

    def _version_keys(self, namespace: str, session: str) -> tuple[str, str]:
        ns = _digest(namespace)
        return f"{PREFIX}:v:{ns}", f"{PREFIX}:v:{ns}:{_digest(namespace, session)}"

    def lookup(
        self, namespace: str, session: str, params: dict[str, Any]
    ) -> tuple[str | None, Any]:
        """The window's key under the current versions and its cached value (or None).

        The key is None when the cache is off; pass it to `put` after a miss.
        """
        if not self.enabled or self._lookup is None:
            return None, None
        shape = _digest(json.dumps(params, sort_keys=True, default=str))
        try:
            key, raw = self._lookup(
                keys=self._version_keys(namespace, session),
                args=[f"{PREFIX}:w:{_digest(namespace, session)}", shape],
            )
        except redis.RedisError as exc:
            self._failed("lookup", exc)
            return None, None
        return key.decode(), json.loads(raw) if raw else None

    def put(self, key: str | None, value: Any, first_expiry: datetime | None) -> None:
        """Cache a window in the background: the caller does not wait for Redis.

        A late write is harmless: its key holds the versions it was read under.
        """
        if key is None or not self.enabled:
            return
        ttl = self.ttl
        if first_expiry is not None:
            ttl = min(ttl, first_expiry.timestamp() - time.time())
        if ttl >= 0.001:
            background_writer().submit(self._set, key, json.dumps(value), int(ttl * 1000))

    def _set(self, key: str, value: str, ttl_ms: int) -> None:
        assert self.client is not None
        try:
            self.client.set(key, value, px=ttl_ms)
        except redis.RedisError as exc:
            self._failed("put", exc)

    def invalidate_session(self, namespace: str, session: str) -> None:
        self._bump(self._version_keys(namespace, session)[1])

    def invalidate_namespace(self, namespace: str) -> None:
        self._bump(self._version_keys(namespace, "")[0])

    def _bump(self, key: str) -> None:
        if self.client is None:
            return
        try:
            with self.client.pipeline() as pipe:
                pipe.incr(key).expire(key, VERSION_TTL).execute()
        except redis.RedisError as exc:
            self._failed("invalidate", exc)
