"""Read-only views of the running system: queue depths and live workers per pool."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kombu.exceptions import ChannelError

from conveyor.app import ConveyorApp


def pool_of(node_name: str) -> str:
    """The pool of a worker node named `pool[.suffix]@host`."""
    return node_name.split("@", 1)[0].split(".", 1)[0]


def queue_depths(app: ConveyorApp) -> dict[str, int]:
    """Ready messages per queue, counted by the broker (all Redis priority lists included)."""
    names = sorted({q.name for q in app.conf.task_queues})
    depths: dict[str, int] = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        channel: Any = conn.default_channel
        for name in names:
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except ChannelError:
                depths[name] = 0
                channel = conn.channel()
    return depths


def workers_by_pool(app: ConveyorApp, timeout: float = 1.0) -> dict[str, list[str]]:
    """Worker node names that answered a ping, grouped by pool."""
    pools: dict[str, list[str]] = defaultdict(list)
    for reply in app.control.ping(timeout=timeout) or []:
        for node in reply:
            pools[pool_of(node)].append(node)
    return {pool: sorted(nodes) for pool, nodes in sorted(pools.items())}
