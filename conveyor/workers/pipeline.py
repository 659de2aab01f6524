"""The run pipeline: one delivery of a run passes through named steps, the agent is called,
and the steps see how it ended, last entered first.

A step is one concept (reroute, bind, claim, record, context, validate, retry) with two
hooks, in the spirit of Dramatiq's middleware:

- `before(state)` prepares the delivery. It may end it early: `Finish(value)` returns a value
  to Celery without calling the agent, `InvalidInput` rejects the run, anything else (Celery's
  `Ignore`, an outage) unwinds the steps entered so far and is raised.
- `after(state, ending)` sees how the delivery ended and returns the ending, the same or
  changed (the retry step turns a transient error into a retry).

The pipeline runs blocking (`execute`, on a prefork or thread pool) or awaited
(`execute_async`, on an event loop): there a `blocking` step's hooks run in a worker thread
and the agent's coroutine is awaited on the loop, so a waiting run holds no thread. A new
concern (tracing, rate limits, durable steps) is a new step in `default_steps()`; the
outcome a run records is built in one place, `outcome()`.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn, TypeVar

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from pydantic import BaseModel
from sqlalchemy.util import await_only

from conveyor.agents import AnyAgent
from conveyor.celery_app import ConveyorApp
from conveyor.context import RunContext
from conveyor.errors import InvalidInput
from conveyor.runs.records import NewRun, Outcome
from conveyor.runs.status import RunStatus
from conveyor.workers.aio_pool import on_async_pool
from conveyor.workers.asyncloop import run_coroutine
from conveyor.workers.handover import wait_on_loop

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


class Finish(Exception):
    """Raised by a step's `before` to end the delivery with `value`, the agent not called."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


@dataclass(frozen=True)
class Ending:
    """How a delivery ended. `status` None means there is nothing to record (a Celery control
    exception passing through); `then` raises what Celery must see after every step is done
    (a retry is published only once the run is recorded as retrying)."""

    status: RunStatus | None
    output: Any = None
    error: BaseException | None = None
    error_type: str | None = None
    error_message: str | None = None
    then: Callable[[], NoReturn] | None = None

    def finish(self) -> Any:
        """The output for Celery, or raise the error (or what `then` raises)."""
        if self.then is not None:
            self.then()
        if self.error is not None:
            raise self.error
        return self.output


def outcome(
    run: NewRun,
    ending: Ending,
    *,
    worker: str | None,
    attempts: int,
    started: datetime | None = None,
) -> Outcome:
    """The state change a worker records for `run`: the one place an Outcome is built."""
    error = ending.error
    return Outcome(
        run=run,
        status=ending.status or RunStatus.FAILED,
        output=ending.output,
        worker=worker,
        attempts=attempts,
        started_at=started,
        finished_at=None if ending.status is RunStatus.RETRYING else now(),
        error_type=ending.error_type or (type(error).__name__ if error else None),
        error_message=ending.error_message or (str(error) if error else None),
        error_traceback=_traceback(error),
    )


def _traceback(error: BaseException | None) -> str | None:
    return "".join(traceback.format_exception(error)) if error else None


@dataclass
class RunState:
    """One delivery of a run, as the steps fill it in."""

    task: Task[Any, Any]
    """The Celery task the run executes in (workers.task.AgentTask)."""
    spec: AnyAgent
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    worker: str = "unknown"
    run: NewRun | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    invalid: InvalidInput | None = None
    model: BaseModel | None = None
    context: RunContext | None = None
    attempt: int = 1
    started: datetime | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    """Room for a step's own per-delivery state (a context token, a span)."""
    request: Any = None
    """The task's Celery request, taken where the trace runs: a blocking hook may run in
    another thread, where `task.request` is not this run's."""

    def __post_init__(self) -> None:
        if self.request is None:
            self.request = self.task.request

    @property
    def app(self) -> ConveyorApp:
        return self.task.app  # type: ignore[return-value]

    def outcome(self, ending: Ending) -> Outcome:
        assert self.run is not None
        return outcome(
            self.run, ending, worker=self.worker, attempts=self.attempt, started=self.started
        )


class Step:
    """One concept of executing a run; see the module docstring."""

    name: ClassVar[str] = "step"
    blocking: ClassVar[bool] = False
    """Does network or disk I/O: awaited, its hooks run in a worker thread."""

    def before(self, state: RunState) -> None:
        pass

    def after(self, state: RunState, ending: Ending) -> Ending:
        return ending


def settle(future: Future[T]) -> T:
    """A write's result (conveyor.runs.recorder); in a trace of the asyncio pool the run's
    greenlet yields to the loop while it waits."""
    return wait_on_loop(future) if on_async_pool() else future.result()


def call(state: RunState) -> Ending:
    """Call the agent with its validated input, blocking until a coroutine ends; on the
    asyncio pool the trace's greenlet yields to the loop instead (only this run waits)."""
    try:
        if on_async_pool():
            result = await_only(_invoke_within_limits(state))
        else:
            result = state.spec.invoke(_model(state))
            if state.spec.is_async:
                result = run_coroutine(result)
        return Ending(RunStatus.SUCCEEDED, output=state.spec.dump_output(result))
    except BaseException as exc:
        return _failed(exc)


async def call_async(state: RunState) -> Ending:
    """Call the agent with its validated input: a coroutine is awaited, a function runs in a
    worker thread."""
    try:
        result = await _invoke_async(state)
        return Ending(RunStatus.SUCCEEDED, output=state.spec.dump_output(result))
    except BaseException as exc:
        return _failed(exc)


async def _invoke_within_limits(state: RunState) -> Any:
    """The call on the asyncio pool, which Celery's time limits do not reach: at the soft
    limit the agent's coroutine is cancelled (it sees CancelledError, and may clean up or
    still return) and the run fails with SoftTimeLimitExceeded; at the hard limit it is
    abandoned and fails with TimeLimitExceeded."""
    settings = state.app.settings
    soft, hard = state.spec.limits(settings.soft_time_limit, settings.time_limit)
    running = asyncio.ensure_future(_invoke_async(state))
    done, _ = await asyncio.wait({running}, timeout=soft)
    if done:
        return running.result()
    running.cancel(f"soft time limit ({soft:g}s) exceeded")
    done, _ = await asyncio.wait({running}, timeout=hard - soft)
    if not done:
        running.cancel()
        raise TimeLimitExceeded(hard)
    try:
        return running.result()
    except asyncio.CancelledError:
        raise SoftTimeLimitExceeded(soft) from None


async def _invoke_async(state: RunState) -> Any:
    if state.spec.is_async:
        return await state.spec.invoke(_model(state))
    return await asyncio.to_thread(state.spec.invoke, _model(state))


def _model(state: RunState) -> BaseModel:
    assert state.model is not None, "the validate step runs before the call"
    return state.model


def _failed(exc: BaseException) -> Ending:
    """A Celery control exception (Retry, Ignore, Reject) passes through unrecorded."""
    if isinstance(exc, Retry | Ignore | Reject):
        return Ending(None, error=exc)
    if isinstance(exc, InvalidInput):
        return Ending(RunStatus.REJECTED, error=exc)
    return Ending(RunStatus.FAILED, error=exc)


def _early(exc: BaseException) -> Ending:
    """The ending of a delivery a `before` hook stopped."""
    if isinstance(exc, Finish):
        return Ending(None, output=exc.value)
    if isinstance(exc, InvalidInput):
        return Ending(RunStatus.REJECTED, error=exc)
    return Ending(None, error=exc)


class Pipeline:
    """The steps of a delivery, in order; see the module docstring."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)

    def execute(self, state: RunState) -> Any:
        """Run the delivery blocking (on the asyncio pool, only the agent's own awaits yield
        to the loop: its steps' round trips measured cheaper inline than in threads)."""
        entered: list[Step] = []
        try:
            for step in self.steps:
                step.before(state)
                entered.append(step)
            ending = call(state)
        except BaseException as exc:
            ending = _early(exc)
        for step in reversed(entered):
            ending = step.after(state, ending)
        return ending.finish()

    async def execute_async(self, state: RunState) -> Any:
        entered: list[Step] = []
        try:
            for step in self.steps:
                await _hook(step, step.before, state)
                entered.append(step)
            ending = await call_async(state)
        except BaseException as exc:
            ending = _early(exc)
        for step in reversed(entered):
            ending = await _hook(step, step.after, state, ending)
        return ending.finish()


async def _hook(step: Step, hook: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(hook, *args) if step.blocking else hook(*args)
