"""kombu's Redis transport with a binding table that a bad entry cannot break.

kombu splits every member of a binding table on its separator and unpacks three fields, so
one malformed member (or one written under conveyor's earlier `:` scheme) made every publish
to that exchange raise, and with it every control reply a worker sent. Here a legacy member
is read as what it means, and a malformed one is skipped with a warning, once.
"""

from __future__ import annotations

import logging

import kombu.transport as kombu_transports
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

from conveyor.broker.once import WarnOnce
from conveyor.broker.redis_keys import split_binding

log = logging.getLogger(__name__)
_warn = WarnOnce(log)


class RedisChannel(kombu_redis.Channel):
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


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel


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
