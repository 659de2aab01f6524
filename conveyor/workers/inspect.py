"""Read-only views of the running system: live workers per pool."""

from __future__ import annotations

from collections import defaultdict

from conveyor.celery_app import ConveyorApp


def pool_of(node_name: str) -> str:
    """The pool of a worker node named `pool[.suffix]@host`."""
    return node_name.split("@", 1)[0].split(".", 1)[0]


def workers_by_pool(app: ConveyorApp, timeout: float = 1.0) -> dict[str, list[str]]:
    """Worker node names that answered a ping, grouped by pool."""
    pools: dict[str, list[str]] = defaultdict(list)
    for reply in app.control.ping(timeout=timeout) or []:
        for node in reply:
            pools[pool_of(node)].append(node)
    return {pool: sorted(nodes) for pool, nodes in sorted(pools.items())}
