"""Large payloads beside their message (a claim check): the bytes wait in the broker's Redis
under a random key with a TTL, and the message carries only the key.

A 1000 x 384 query matrix is 1.5 MB of float32. Inside a message it is base64-encoded,
JSON-encoded twice (body, then kombu's envelope), copied through the worker's pipe to its
child and decoded again at each step; beside it, it is written once and read once as bytes.
The broker's Redis is used, never the cache, because a cache may evict.
"""

from __future__ import annotations

import logging
import re
import uuid

import redis

from conveyor.config import Settings
from conveyor.errors import ServiceUnavailable
from conveyor.outages import CONNECT_TIMEOUT, SOCKET_TIMEOUT
from conveyor.services import redis_client

BLOB_FROM_BYTES = 64 * 1024
"""Payloads at least this large travel beside the message; smaller ones inside it."""
KEY_PATTERN = r"^conveyor:blob:[0-9a-f]{32}$"
"""What a blob key looks like: a message cannot make a worker read any other Redis key."""
_KEY = re.compile(KEY_PATTERN)
log = logging.getLogger(__name__)


def is_blob_key(key: str) -> bool:
    return _KEY.match(key) is not None


class BlobStore:
    """put / get / delete of payloads under random keys that expire after `ttl` seconds."""

    def __init__(self, client: redis.Redis[bytes], ttl: int) -> None:
        self.client, self.ttl = client, ttl

    def put(self, data: bytes) -> str:
        key = f"conveyor:blob:{uuid.uuid4().hex}"
        try:
            self.client.set(key, data, ex=self.ttl)
        except redis.RedisError as exc:
            raise ServiceUnavailable(f"broker unreachable: {exc}") from exc
        return key

    def get(self, key: str) -> bytes | None:
        """The payload, or None once it expired or was deleted."""
        if not is_blob_key(key):
            raise ValueError(f"{key!r} is not a blob key")
        return self.client.get(key)

    def delete(self, key: str) -> None:
        """Drop a payload that is no longer needed; a failure only leaves it to expire."""
        try:
            self.client.delete(key)
        except redis.RedisError as exc:
            log.warning("blob %s not deleted (it expires in %ss): %s", key, self.ttl, exc)


def blob_store_for(settings: Settings) -> BlobStore | None:
    """The blob store on the broker's Redis, or None (RabbitMQ broker, or blob_ttl 0)."""

    broker = str(settings.broker_url or "")
    if settings.blob_ttl <= 0 or not settings.redis_broker:
        return None
    client = redis_client(broker, settings.tls, SOCKET_TIMEOUT, CONNECT_TIMEOUT)
    return None if client is None else BlobStore(client, settings.blob_ttl)
