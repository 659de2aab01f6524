"""Prompt memory: conversation turns, prompts and facts per namespace and session.

Plain Python over PostgreSQL with a Redis cache of recall windows; the `memory.*` agents in
`conveyor.memory.agents` bind it to the memory pool, and `Client.memory` calls them.
"""

from __future__ import annotations

from conveyor.config import Settings
from conveyor.memory.cache import RecallCache
from conveyor.memory.hybrid import MemoryVectors
from conveyor.memory.schema import (
    ForgetRequest,
    Forgotten,
    Hit,
    Item,
    MemoryLimits,
    NewItem,
    RecallRequest,
    Remembered,
    RememberRequest,
    RememberResult,
    Role,
    SearchRequest,
    SearchResult,
    Stats,
    StatsRequest,
    SweepRequest,
    Swept,
    Window,
)
from conveyor.memory.settings import MemorySettings, memory_settings
from conveyor.memory.store import MemoryStore
from conveyor.models.db import engine_for
from conveyor.services import cache_client, per_process
from conveyor.vector import service_for

__all__ = [
    "ForgetRequest",
    "Forgotten",
    "Hit",
    "Item",
    "MemoryLimits",
    "MemorySettings",
    "MemoryStore",
    "NewItem",
    "RecallCache",
    "RecallRequest",
    "RememberRequest",
    "RememberResult",
    "Remembered",
    "Role",
    "SearchRequest",
    "SearchResult",
    "Stats",
    "StatsRequest",
    "SweepRequest",
    "Swept",
    "Window",
    "memory_settings",
    "store_for",
]


def store_for(settings: Settings) -> MemoryStore:
    """This process's MemoryStore for `settings` (services already resolved)."""

    def build() -> MemoryStore:

        assert settings.database_url is not None
        return MemoryStore(
            engine_for(settings.database_url),
            RecallCache(cache_client(settings.cache_url, settings.tls), settings.cache_ttl),
            MemoryLimits.from_settings(memory_settings()),
            MemoryVectors(service_for(settings)),
        )

    return per_process("memory", settings, build)
