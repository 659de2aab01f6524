"""Pool definitions and worker boot: what a `conveyor worker` process is made of."""

from conveyor.workers.pools import BUILTIN_POOLS, Pool

__all__ = ["BUILTIN_POOLS", "Pool"]
