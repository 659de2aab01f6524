"""The exceptions conveyor raises, one per kind of failure a caller can act on."""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Base class of every error conveyor raises on purpose."""


class ConfigError(ConveyorError):
    """A setting is invalid; the message names the setting and what was wrong."""


class ServiceUnavailable(ConveyorError):
    """The broker or the database cannot be reached."""


class NotMigrated(ConveyorError):
    """The database schema is older than this code expects."""


class UnknownAgent(ConveyorError):
    """No agent is registered under the requested name."""

    def __init__(self, name: str, close_matches: list[str]) -> None:
        super().__init__(name, close_matches)
        self.name = name
        self.close_matches = close_matches

    def __str__(self) -> str:
        hint = f"; did you mean {', '.join(self.close_matches)}?" if self.close_matches else ""
        return f"unknown agent {self.name!r}{hint}"


class InvalidInput(ConveyorError):
    """A payload failed validation against the agent's input model. Never retried.

    Its args are (agent, errors), so Celery can rebuild it from JSON for `AsyncResult.get()`.
    """

    def __init__(self, agent: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(agent, errors)
        self.agent = agent
        self.errors = errors

    def __str__(self) -> str:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or '<input>'}: {e.get('msg')}"
            for e in self.errors
        )
        return f"invalid input for {self.agent}: {details}"


class TransientError(ConveyorError):
    """Raise from an agent to ask for a retry with backoff."""


class RunFailed(ConveyorError):
    """A run ended in a state other than succeeded."""

    def __init__(self, run_id: str, status: str, error: str | None) -> None:
        super().__init__(run_id, status, error)
        self.run_id = run_id
        self.status = status
        self.error = error

    def __str__(self) -> str:
        return f"run {self.run_id} {self.status}: {self.error or 'no error recorded'}"


class RunTimeout(ConveyorError):
    """A wait for a run ended before the run did."""
