"""Built-in agents, one module per pool. Importing this package registers them."""

from conveyor.tasks import analytics, default, memory, vector

__all__ = ["analytics", "default", "memory", "vector"]
