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

log = logging.getLogger(__name__)
PREFIX = "conveyor:memory"
VERSION_TTL = 86400
RETRY_AFTER = 5.0


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RecallCache:
    def __init__(self, client: redis.Redis[bytes] | None, ttl: float = 60.0) -> None:
        self.client = client
        self.ttl = ttl
        self._down_until = 0.0

    @classmethod
    def from_url(cls, url: str | None, ttl: float = 60.0) -> RecallCache:
        """A cache on `url` (redis://, rediss://, redis+socket://), or a disabled one."""
        if not url:
            return cls(None, ttl)
        url = url.replace("redis+socket://", "unix://", 1)
        return cls(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5), ttl)

    @property
    def enabled(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        log.warning("memory cache unavailable (%s: %s); using PostgreSQL", what, exc)

    def _version_keys(self, namespace: str, session: str) -> tuple[str, str]:
        ns = _digest(namespace)
        return f"{PREFIX}:v:{ns}", f"{PREFIX}:v:{ns}:{_digest(namespace, session)}"

    def key_for(self, namespace: str, session: str, params: dict[str, Any]) -> str | None:
        """The cache key of a window under the current versions; None if the cache is off."""
        if not self.enabled:
            return None
        assert self.client is not None
        try:
            ns_version, session_version = self.client.mget(self._version_keys(namespace, session))
        except redis.RedisError as exc:
            self._failed("read versions", exc)
            return None
        shape = json.dumps(params, sort_keys=True, default=str)
        versions = f"{_v(ns_version)}.{_v(session_version)}"
        return f"{PREFIX}:w:{_digest(namespace, session)}:{versions}:{_digest(shape)}"

    def get(self, key: str | None) -> Any:
        if key is None or not self.enabled:
            return None
        assert self.client is not None
        try:
            raw = self.client.get(key)
        except redis.RedisError as exc:
            self._failed("get", exc)
            return None
        return json.loads(raw) if raw else None

    def put(self, key: str | None, value: Any, first_expiry: datetime | None) -> None:
        if key is None or not self.enabled:
            return
        assert self.client is not None
        ttl = self.ttl
        if first_expiry is not None:
            ttl = min(ttl, first_expiry.timestamp() - time.time())
        if ttl < 0.001:
            return
        try:
            self.client.set(key, json.dumps(value), px=int(ttl * 1000))
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


def _v(value: bytes | None) -> str:
    return value.decode() if value else "0"
