"""The run pipeline (conveyor.workers.pipeline), blocking and awaited, with steps of its own:
hook order, early endings, the ending each step sees, and where awaited hooks run."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest

from conveyor.agents import agent
from conveyor.errors import InvalidInput
from conveyor.runs.status import RunStatus
from conveyor.workers.pipeline import Ending, Finish, Pipeline, RunState, Step


@agent(name="unit.pipeline.double")
def double(value: int) -> int:
    if value < 0:
        raise ValueError("negative")
    return value * 2


@agent(name="unit.pipeline.double_async")
async def double_async(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


class Journal(Step):
    """Notes its hooks, and the ending it saw, in a shared list."""

    def __init__(self, label: str, log: list[Any], *, blocking: bool = False) -> None:
        self.label, self.log, self.is_blocking = label, log, blocking
        self.threads: list[str] = []

    @property
    def blocking(self) -> bool:  # type: ignore[override]
        return self.is_blocking

    def before(self, state: RunState) -> None:
        self.threads.append(threading.current_thread().name)
        self.log.append(f"{self.label}.before")

    def after(self, state: RunState, ending: Ending) -> Ending:
        self.threads.append(threading.current_thread().name)
        self.log.append((f"{self.label}.after", ending.status, ending.output))
        return ending


class Validate(Step):
    def before(self, state: RunState) -> None:
        state.model = state.spec.validate_input(state.payload)


class Stop(Step):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def before(self, state: RunState) -> None:
        raise self.exc


def state_for(spec: Any, value: Any) -> RunState:
    task = SimpleNamespace(agent=spec, request=SimpleNamespace(), app=None)
    state = RunState(task, spec, (), {"value": value})  # type: ignore[arg-type]
    state.payload = {"value": value}
    return state


def run(pipeline: Pipeline, state: RunState, awaited: bool) -> Any:
    return asyncio.run(pipeline.execute_async(state)) if awaited else pipeline.execute(state)


MODES = pytest.mark.parametrize("awaited", [False, True], ids=["blocking", "awaited"])


@MODES
@pytest.mark.parametrize("spec", [double, double_async], ids=["sync", "async"])
def test_before_hooks_in_order_the_call_then_after_hooks_in_reverse(
    awaited: bool, spec: Any
) -> None:
    log: list[Any] = []
    steps = [Journal("a", log), Journal("b", log), Validate()]
    assert run(Pipeline(steps), state_for(spec, 21), awaited) == 42
    done = (RunStatus.SUCCEEDED, 42)
    assert log == ["a.before", "b.before", ("b.after", *done), ("a.after", *done)]


@MODES
def test_a_failing_call_reaches_every_step_and_is_raised(awaited: bool) -> None:
    log: list[Any] = []
    with pytest.raises(ValueError, match="negative"):
        run(Pipeline([Journal("a", log), Validate()]), state_for(double, -1), awaited)
    assert log == ["a.before", ("a.after", RunStatus.FAILED, None)]


@MODES
def test_invalid_input_before_the_call_is_a_rejection_seen_by_the_steps_entered(
    awaited: bool,
) -> None:
    log: list[Any] = []
    steps = [Journal("a", log), Validate(), Journal("never", log)]
    with pytest.raises(InvalidInput):
        run(Pipeline(steps), state_for(double, "not a number"), awaited)
    assert log == ["a.before", ("a.after", RunStatus.REJECTED, None)]


@MODES
def test_finish_returns_its_value_without_calling_the_agent_or_recording(awaited: bool) -> None:
    log: list[Any] = []
    steps = [Journal("a", log), Stop(Finish("earlier output")), Validate()]
    assert run(Pipeline(steps), state_for(double, -1), awaited) == "earlier output"
    assert log == ["a.before", ("a.after", None, "earlier output")]


@MODES
def test_an_after_hook_may_change_the_ending_and_defer_what_is_raised(awaited: bool) -> None:
    seen: list[Any] = []

    class Retry(Step):
        def after(self, state: RunState, ending: Ending) -> Ending:
            def then() -> NoReturn:
                raise RuntimeError("retry published last")

            return Ending(RunStatus.RETRYING, error=ending.error, then=then)

    class Record(Step):
        def after(self, state: RunState, ending: Ending) -> Ending:
            seen.append(ending.status)
            return ending

    with pytest.raises(RuntimeError, match="retry published last"):
        run(Pipeline([Record(), Validate(), Retry()]), state_for(double, -1), awaited)
    assert seen == [RunStatus.RETRYING], "the step entered first sees the final decision"


def test_awaited_blocking_hooks_run_in_a_thread_and_the_others_on_the_loop() -> None:
    log: list[Any] = []
    io, pure = Journal("io", log, blocking=True), Journal("pure", log)
    loop_thread: list[str] = []

    async def main() -> Any:
        loop_thread.append(threading.current_thread().name)
        return await Pipeline([io, pure, Validate()]).execute_async(state_for(double_async, 1))

    assert asyncio.run(main()) == 2
    assert set(pure.threads) == set(loop_thread)
    assert loop_thread[0] not in io.threads
