"""Queue state read straight from the broker: ready, reserved, delayed and oldest age.

Redis: one script call sums every priority sub-list (kombu's `sep`, `priority_steps` and
`global_keyprefix` come from the transport's own channel, and every step of 0..9 is counted
whatever a client used), reads each sub-list's oldest message, and attributes kombu's
unacked hash to queues. RabbitMQ: a passive declare per queue,
plus the management API for unacknowledged messages when its URL is configured. No worker
broadcast is ever sent.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import Any, Literal

from kombu.exceptions import ChannelError
from pydantic import BaseModel

from conveyor.broker.redis_keys import LEGACY_SEP, PRIORITY_STEPS
from conveyor.celery_app import ConveyorApp
from conveyor.metrics.rabbitmq import management_counts

Source = Literal["redis", "amqp-passive-declare", "amqp-management-api"]


class QueueState(BaseModel):
    """One broker queue as the autoscalers see it."""

    queue: str
    pool: str
    ready: int
    """Messages waiting in the broker, every priority level summed."""
    reserved: int
    """Delivered to a worker and not yet acknowledged (prefetched or running), ETA ones apart."""
    delayed: int
    """Held by a worker until their ETA or countdown."""
    oldest_age_seconds: float
    """Age of the oldest ready message (0 when none is waiting)."""
    reserved_source: Source
    """Where `reserved` comes from; with RabbitMQ and no management URL it is always 0."""


def queue_pools(app: ConveyorApp) -> dict[str, str]:
    """Every queue conveyor's workers consume, mapped to its pool."""
    prefix = app.settings.queue_prefix
    return {q: name for name, pool in app.settings.pools.items() for q in pool.queues(prefix)}


def epoch(stamp: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 string; None if neither."""
    if isinstance(stamp, int | float):
        return float(stamp)
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            return None
    return None


class FirstSeen:
    """Enqueue times for messages without conveyor's header: when a reader first saw them."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._seen: dict[str, float] = {}

    def stamp(self, message_id: str, now: float) -> float:
        if message_id not in self._seen and len(self._seen) >= self.limit:
            self._seen.pop(next(iter(self._seen)))
        return self._seen.setdefault(message_id, now)


def enqueue_time(found: bytes | None, seen: FirstSeen, now: float) -> float | None:
    """What the read script found for a sub-list: conveyor's enqueue header, or `id:<task id>`
    for a message without one, which is then aged from when a reader first saw it."""
    if not found:
        return None
    text = found.decode()
    if text.startswith("id:"):
        return seen.stamp(text[3:], now) if len(text) > 3 else None
    return epoch(text)


READ_QUEUES = """
local prefix, steps = ARGV[1], cjson.decode(ARGV[2])
local seps = cjson.decode(ARGV[3])
local out = {redis.call('HGETALL', KEYS[1])}
for i = 4, #ARGV do
  local queue, ready, oldest, unstamped = ARGV[i], 0, false, {}
  local keys = {prefix .. queue}
  for _, step in ipairs(steps) do
    if step ~= 0 then
      for _, sep in ipairs(seps) do keys[#keys + 1] = prefix .. queue .. sep .. step end
    end
  end
  for _, key in ipairs(keys) do
    local length = redis.call('LLEN', key)
    if length > 0 then
      ready = ready + length
      local tail = redis.call('LINDEX', key, -1)
      local stamp = string.match(tail, '"conveyor_enqueued_at": *"([^"]+)"')
      if stamp then
        if not oldest or stamp < oldest then oldest = stamp end
      else
        unstamped[#unstamped + 1] = string.match(tail, '"id": *"([^"]*)"') or ''
      end
    end
  end
  out[#out + 1] = {ready, oldest, unstamped}
end
return out
"""
"""kombu's unacked hash, then per queue (ARGV[4:]): its ready messages over every priority
sub-list (kombu's key scheme: the queue, then queue + sep + step for steps above 0, all under
global_keyprefix; also under the legacy separator, whose lists workers move, so that a pool
scaled to zero is scaled up for them), the oldest enqueue header (UTC ISO strings compare in
time order), and the ids of oldest messages without one. One round trip of a few KB however
big the messages are."""


def read_script_args(channel: Any, names: list[str]) -> list[str]:
    """READ_QUEUES' arguments for `names`: every step 0..9 and both separators."""
    steps = sorted({int(s) for s in channel.priority_steps} | set(PRIORITY_STEPS))
    seps = sorted({channel.sep, LEGACY_SEP})
    return [channel.global_keyprefix, json.dumps(steps), json.dumps(seps), *names]


class RedisQueues:
    """Reads queue state from a Redis broker through kombu's own channel and client."""

    def __init__(self, app: ConveyorApp) -> None:
        self.app = app
        self.pools = queue_pools(app)
        self.seen = FirstSeen()
        self._connection: Any = None
        self._script: Any = None

    def _channel(self) -> Any:
        if self._connection is None:
            self._connection = self.app.connection_for_read()
            self._connection.ensure_connection(max_retries=1)
        return self._connection.default_channel

    def close(self) -> None:
        self._script = None
        if self._connection is not None:
            self._connection.release()
            self._connection = None

    def read(self) -> list[QueueState]:
        try:
            return self._read(self._channel())
        except Exception:
            self.close()
            raise

    def _read(self, channel: Any) -> list[QueueState]:
        names = sorted(self.pools)
        if self._script is None:
            self._script = channel.client.register_script(READ_QUEUES)
        args = read_script_args(channel, names)
        unacked, *replies = self._script(keys=[channel.unacked_key], args=args)
        now = time.time()
        reserved, delayed = self._unacked(unacked[1::2], now)
        states = []
        for q, (ready, oldest, unstamped) in zip(names, replies, strict=True):
            stamps = [enqueue_time(oldest, self.seen, now)] if oldest else []
            stamps += [enqueue_time(b"id:" + i, self.seen, now) for i in unstamped]
            known = [t for t in stamps if t is not None]
            states.append(
                QueueState(
                    queue=q,
                    pool=self.pools[q],
                    ready=int(ready),
                    reserved=reserved.get(q, 0),
                    delayed=delayed.get(q, 0),
                    oldest_age_seconds=max(0.0, now - min(known)) if known else 0.0,
                    reserved_source="redis",
                )
            )
        return states

    def _unacked(self, entries: list[bytes], now: float) -> tuple[dict[str, int], dict[str, int]]:
        """Unacked messages per queue, split into reserved and delayed (a future ETA)."""
        by_key = {q.routing_key: q.name for q in self.app.conf.task_queues or ()}
        reserved: dict[str, int] = {}
        delayed: dict[str, int] = {}
        for raw in entries:
            try:
                message, _exchange, routing_key = json.loads(raw)
                eta = epoch((message.get("headers") or {}).get("eta"))
            except (ValueError, TypeError, AttributeError):
                continue
            queue = by_key.get(routing_key, routing_key)
            into = delayed if eta is not None and eta > now else reserved
            into[queue] = into.get(queue, 0) + 1
        return reserved, delayed


class AmqpQueues:
    """Reads RabbitMQ queues: a passive declare each, and the management API if configured."""

    def __init__(self, app: ConveyorApp, management_url: str | None = None) -> None:
        self.app = app
        self.pools = queue_pools(app)
        self.management_url = management_url
        self._connection: Any = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None

    def read(self) -> list[QueueState]:
        try:
            ready = self._passive()
        except Exception:
            self.close()
            raise
        extra: dict[str, tuple[int, float | None]] = {}
        if self.management_url:
            extra = management_counts(self.management_url, self._connection.virtual_host or "/")
        now = time.time()
        source: Source = "amqp-management-api" if self.management_url else "amqp-passive-declare"
        states = []
        for q in sorted(self.pools):
            unacked, head = extra.get(q, (0, None))
            states.append(
                QueueState(
                    queue=q,
                    pool=self.pools[q],
                    ready=ready[q],
                    reserved=unacked,
                    delayed=0,
                    oldest_age_seconds=max(0.0, now - head) if head is not None else 0.0,
                    reserved_source=source,
                )
            )
        return states

    def _passive(self) -> dict[str, int]:
        """Ready messages per queue (a missing queue has none)."""
        if self._connection is None:
            self._connection = self.app.connection_for_read()
            self._connection.ensure_connection(max_retries=1)
        channel = self._connection.default_channel
        ready = {}
        for q in sorted(self.pools):
            try:
                ready[q] = int(channel.queue_declare(queue=q, passive=True).message_count)
            except ChannelError:
                ready[q], channel = 0, self._connection.channel()
        return ready


class QueueReader:
    """The broker's queue state, cached for `ttl` seconds so scrapes stay cheap."""

    def __init__(self, app: ConveyorApp, ttl: float = 1.0) -> None:
        self.source: RedisQueues | AmqpQueues = (
            RedisQueues(app)
            if app.uses_redis
            else AmqpQueues(app, app.settings.rabbitmq_management_url)
        )
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, list[QueueState]] | None = None

    def read(self, fresh: bool = False) -> list[QueueState]:
        with self._lock:
            now = time.monotonic()
            if fresh or self._cached is None or now - self._cached[0] >= self.ttl:
                self._cached = (now, self.source.read())
            return self._cached[1]

    def close(self) -> None:
        self.source.close()
