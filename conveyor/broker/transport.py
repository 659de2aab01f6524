"""kombu's Redis transport, with a binding table that a bad entry cannot break and, on an
asyncio pool's worker, deliveries and acks taken in batches.

kombu splits every member of a binding table on its separator and unpacks three fields, so
one malformed member (or one written under conveyor's earlier `:` scheme) made every publish
to that exchange raise, and with it every control reply a worker sent. Here a legacy member
is read as what it means, and a malformed one is skipped with a warning, once.

kombu's Redis channel costs three round trips a message: the BRPOP that takes it, the
transaction that marks it unacked and the one that acks it. A worker keeping thousands of
runs in flight spent about a third of its CPU there. With batches on (`consume_in_batches`),
a BRPOP that delivered is followed by one script that takes up to the prefetch credit left
and marks each taken message unacked in the same atomic step, exactly as kombu would mark it
(so kombu's redelivery of unacked messages restores it after the visibility timeout); and
acks are gathered, then removed in one transaction per turn of the worker's event loop (a
gathered ack not yet written is an ack lost, as if the worker died a moment sooner: the
message is redelivered and its run, already final, is not run again).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, cast

import kombu.transport as kombu_transports
import orjson
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import ResponseError

from conveyor.broker.once import WarnOnce
from conveyor.broker.redis_keys import split_binding

log = logging.getLogger(__name__)
_warn = WarnOnce(log)

MAX_BATCH = 200
"""The most messages one batch takes off the queues."""

TAKE_BATCH = """#!lua
local want = tonumber(ARGV[1])
local out = {}
for i = 3, #KEYS do
  if want <= 0 then break end
  local items = redis.call('RPOP', KEYS[i], want)
  if items then
    for j, item in ipairs(items) do
      local ok, message = pcall(cjson.decode, item)
      local props = ok and type(message) == 'table' and message['properties']
      local info = type(props) == 'table' and props['delivery_info']
      local tag = type(props) == 'table' and props['delivery_tag']
      if type(info) ~= 'table' or type(tag) ~= 'string' then
        for k = #items, j, -1 do redis.call('RPUSH', KEYS[i], items[k]) end
        return out
      end
      redis.call('ZADD', KEYS[1], ARGV[2], tag)
      redis.call('HSET', KEYS[2], tag, '[' .. item .. ',' .. cjson.encode(info['exchange'])
        .. ',' .. cjson.encode(info['routing_key']) .. ']')
      out[#out + 1] = i - 3
      out[#out + 1] = item
    end
    want = want - #items
  end
end
return out
"""
"""Take up to ARGV[1] messages off KEYS[3:] in order, marking each unacked (KEYS[1], the
index scored ARGV[2]; KEYS[2], kombu's `[message, exchange, routing_key]`); returns the
index of each message's list in KEYS[3:] (from 0) and the message. A message it cannot
read goes back where it was, with those after it, and ends the batch: kombu's own path takes
it next. Declared with Redis 7's `#!lua` line, so a server out of memory refuses it whole
instead of failing it halfway (a script's writes are not undone), and a server older than 7
refuses it at once."""

_batches = False


def consume_in_batches(enabled: bool = True) -> None:
    """Take deliveries and acks in batches on the worker of this process (an asyncio pool's:
    the one whose prefetch is large enough for it to matter)."""
    global _batches
    _batches = enabled


class BatchingQoS(kombu_redis.QoS):
    """kombu's ack emulation, its acks gathered while the channel is on an event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: list[str] = []
        self._acks_lock = threading.Lock()
        self.premarked = False
        """Set while a batch is delivered: its messages are marked unacked already."""

    def append(self, message: Any, delivery_tag: str) -> None:
        if self.premarked:
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if not _gathers_acks(self.channel):
            super().ack(delivery_tag)
            return
        with self._acks_lock:
            self._acks.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def flush_acks(self) -> None:
        """Remove every gathered ack's message from the unacked index, in one transaction."""
        with self._acks_lock:
            tags, self._acks = self._acks, []
        if tags:
            with self.pipe_or_acquire() as pipe:
                pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()


class RedisChannel(kombu_redis.Channel):
    QoS = BatchingQoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._take_batch: Any = None
        self._batches_refused = False

    def get_table(self, exchange: str) -> list[tuple[str, str, str]]:
        key = self.keyprefix_queue % exchange
        with self.conn_or_acquire() as client:
            members = [bytes_to_str(m) for m in client.smembers(key)]
        table = []
        for member in members:
            binding = split_binding(member, self.sep)
            if binding is None:
                _warn(
                    (key, member),
                    "ignoring a malformed binding entry %r in %s: it is not "
                    "routing_key, pattern and queue joined by kombu's separator",
                    member,
                    key,
                )
            else:
                table.append(binding)
        return table

    def _brpop_read(self, **options: Any) -> bool:
        kombu: Any = super()
        delivered: bool = kombu._brpop_read(**options)
        if delivered and _gathers_acks(self):
            self._deliver_batch()
        return delivered

    def _deliver_batch(self) -> None:
        """After a BRPOP's message: take as many more as the prefetch credit allows."""
        kombu: Any = self
        qos: BatchingQoS = kombu.qos
        want = min(qos.can_consume_max_estimate() or 0, MAX_BATCH)
        if want <= 0 or self.global_keyprefix or self._batches_refused:
            return
        queues = kombu._queue_cycle.consume(len(self.active_queues))
        lists = [(queue, pri) for pri in self.priority_steps for queue in queues]
        if self._take_batch is None:
            self._take_batch = self.client.register_script(TAKE_BATCH)
        keys = [self.unacked_index_key, self.unacked_key]
        keys += [kombu._q_for_pri(queue, pri) for queue, pri in lists]
        try:
            with self.conn_or_acquire() as client:
                taken = self._take_batch(keys=keys, args=[want, time.time()], client=client)
        except ResponseError as exc:
            if not str(exc).startswith("OOM"):
                self._batches_refused = True
                log.warning(
                    "taking deliveries in batches is off for this worker: the Redis server "
                    "refused the batch script (it needs Redis 7 or later with Lua's cjson): %s",
                    exc,
                )
            return
        items: list[bytes] = taken[1::2]
        queues_of = [lists[int(index)][0] for index in taken[::2]]
        qos.premarked = True
        try:
            for done, (queue, item) in enumerate(zip(queues_of, items, strict=True)):
                try:
                    message = _message(item)
                except BaseException:
                    self._restore_undelivered(items[done:])
                    raise
                try:
                    self.connection._deliver(message, queue)
                except BaseException:
                    self._restore_undelivered(items[done + 1 :])
                    raise
        finally:
            qos.premarked = False

    def _restore_undelivered(self, items: list[bytes]) -> None:
        """Put messages a batch took but did not deliver back at the head of their queue,
        and out of the unacked index (kombu's restore of one unacked message)."""
        qos: Any = self.qos
        for item in items:
            tag = _message(item)["properties"]["delivery_tag"]
            qos.restore_by_tag(tag, leftmost=True)

    def flush_acks(self) -> None:
        qos: BatchingQoS | None = self._qos  # type: ignore[assignment]
        if qos is not None:
            qos.flush_acks()

    def close(self) -> None:
        if _gathers_acks(self):
            try:
                self.flush_acks()
            except Exception:
                log.warning("acks not written on close: their messages come back", exc_info=True)
        super().close()


def _message(item: bytes) -> dict[str, Any]:
    """A message as kombu's JSON reads it. orjson where kombu's own type markers cannot be
    in it: faster, and it shares the strings of keys between messages (the headers' keys
    are most of what a waiting run's message holds). What orjson refuses (NaN, integers
    over 64 bits) kombu reads."""
    if _TYPE_MARKER not in item:
        try:
            return cast(dict[str, Any], orjson.loads(item))
        except orjson.JSONDecodeError:
            pass
    return cast(dict[str, Any], loads(bytes_to_str(item)))


_TYPE_MARKER = b'"__type__"'


def _gathers_acks(channel: Any) -> bool:
    return bool(getattr(channel.connection, "gathers_acks", False))


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel
    gathers_acks = False
    """Set on a worker's connection with batches on: its channels gather acks."""

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """A worker's connection: with batches on, its channels take deliveries in batches
        and gather acks, written once a turn of the loop (after the turn's callbacks,
        before it polls)."""
        super().register_with_event_loop(connection, loop)
        if _batches:
            self.gathers_acks = True
            loop.on_tick.add(self._flush_acks)

    def _flush_acks(self) -> None:
        for channel in self.channels or ():
            if isinstance(channel, RedisChannel):
                channel.flush_acks()


REDIS_SCHEMES = ("redis", "rediss")


def install_redis_transport() -> None:
    """Make RedisTransport what kombu uses for redis:// and rediss:// (and redis+socket://)
    in this process, its pooled connections included. kombu resolves a URL's scheme through
    TRANSPORT_ALIASES, its extension point for transports, and caches what it resolved;
    idempotent."""
    path = f"{RedisTransport.__module__}:{RedisTransport.__name__}"
    for scheme in REDIS_SCHEMES:
        kombu_transports.TRANSPORT_ALIASES[scheme] = path
        getattr(kombu_transports, "_transport_cache", {}).pop(scheme, None)
