"""The run an agent is executing, readable from inside the agent."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from conveyor.config import Settings
from conveyor.errors import ConveyorError


@dataclass(frozen=True)
class RunContext:
    """What a run needs from inside the agent: who it is, and the settings it runs under."""

    id: str
    agent: str
    pool: str
    worker: str
    attempt: int
    root_id: str | None
    parent_id: str | None
    settings: Settings
    """The worker's settings, with the service URLs resolved."""
    on_finished: list[Callable[[], None]] = field(default_factory=list)
    """Called once the run's final state (succeeded, failed, rejected) is recorded, not
    before a retry: to drop what only this run needed. An exception is logged, not raised."""


_current: ContextVar[RunContext | None] = ContextVar("conveyor_run", default=None)


def current_run() -> RunContext:
    """The run being executed; raises outside an agent."""
    ctx = _current.get()
    if ctx is None:
        raise ConveyorError("current_run() is only available inside a running agent")
    return ctx
