"""RunHandle: a submitted run, typed by its agent's output, to wait for or read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import TypeAdapter

from conveyor.agents import Agent
from conveyor.errors import RunFailed
from conveyor.runs.records import Run
from conveyor.runs.status import RunStatus

R = TypeVar("R")


class Waits(Protocol):
    """What a handle waits through: the client's waiter."""

    def wait(self, run_id: str, timeout: float | None = None) -> Run: ...


@dataclass(frozen=True)
class RunHandle(Generic[R]):
    """One run: `result()` is the agent's output as its return annotation types it.

    The `*_async` forms wait in a worker thread, so many can be awaited at once.
    """

    id: str
    agent: str
    output: TypeAdapter[R]
    waiter: Waits

    @classmethod
    def of(cls, run_id: str, agent: Agent[Any, Any], waiter: Waits) -> RunHandle[Any]:
        """A handle of a run of `agent` (typed by the caller, which knows the agent's R)."""
        return RunHandle(run_id, agent.name, agent.output_adapter, waiter)

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run reaches a final state and return it."""
        return self.waiter.wait(self.id, timeout)

    def result(self, timeout: float | None = None) -> R:
        """The run's output, validated into R; RunFailed if it ended in any other way."""
        run = self.wait(timeout)
        if run.status is not RunStatus.SUCCEEDED:
            raise RunFailed(self.id, run.status.value, run.error_message)
        return self.output.validate_python(run.output)

    async def wait_async(self, timeout: float | None = None) -> Run:
        return await asyncio.to_thread(self.wait, timeout)

    async def result_async(self, timeout: float | None = None) -> R:
        return await asyncio.to_thread(self.result, timeout)
