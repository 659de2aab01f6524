"""ConveyorApp: the Celery app every conveyor process runs on, with conveyor's settings,
its agents and this process's run store. `conveyor.app.create_app` builds it."""

from __future__ import annotations

from typing import Any

from celery import Celery

from conveyor.agents import AnyAgent, Registry
from conveyor.config import Settings, is_redis_url
from conveyor.dlq.store import DeadLetterStore
from conveyor.forksafe import ProcessLocal
from conveyor.models.db import engine_for
from conveyor.runs.recorder import RunRecorder
from conveyor.runs.repository import RunRepository

MAX_PRIORITY = 9


class ConveyorApp(Celery):
    """A Celery app that also knows conveyor's settings, agents and run store."""

    settings: Settings
    agents: Registry

    def __init__(self, settings: Settings, agents: Registry, **kwargs: Any) -> None:
        super().__init__("conveyor", **kwargs)
        self.settings = settings
        self.agents = agents
        self.pool_name: str | None = None
        """The pool this process works for, when it is a worker."""
        self._store = ProcessLocal(self._open_run_store)

    def _open_run_store(self) -> tuple[RunRepository, RunRecorder]:
        assert self.settings.database_url is not None
        runs = RunRepository(engine_for(self.settings.database_url))
        return runs, RunRecorder(runs, self.settings.record_retry_seconds)

    def _run_store(self) -> tuple[RunRepository, RunRecorder]:
        """This process's repository and recorder; a forked child builds its own."""
        return self._store.get()

    @property
    def embedded(self) -> bool:
        """Whether it runs on the embedded services (stopped by the command that started it)."""
        return self.settings.embedded

    @property
    def validation_context(self) -> dict[str, Any]:
        """What agent input validators see: the core settings. A feature's own limits come
        from its settings (e.g. `MemoryLimits.of`: a `memory` entry, else the process's)."""
        return {"settings": self.settings}

    @property
    def runs(self) -> RunRepository:
        return self._run_store()[0]

    @property
    def recorder(self) -> RunRecorder:
        return self._run_store()[1]

    @property
    def dead_letters(self) -> DeadLetterStore:
        """This process's dead-letter store (engines are per process)."""
        assert self.settings.database_url is not None
        return DeadLetterStore(engine_for(self.settings.database_url))

    @property
    def uses_redis(self) -> bool:
        return is_redis_url(str(self.conf.broker_url))

    def broker_priority(self, priority: int) -> int:
        """Translate 0..9 (9 most urgent) to the broker's own scale (Redis: 0 is first)."""
        if not 0 <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be 0..{MAX_PRIORITY}, got {priority}")
        return MAX_PRIORITY - priority if self.uses_redis else priority

    def agent_queue(self, spec: AnyAgent) -> str:
        return self.settings.pool(spec.pool).queue(self.settings.queue_prefix)
