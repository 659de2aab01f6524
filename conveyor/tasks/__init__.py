"""Built-in agents, one module per pool. Importing this package registers them."""

from conveyor.tasks import default, memory, vector

__all__ = ["default", "memory", "vector"]
