"""Error classes: messages, and rebuilding from args as Celery does after a JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor.agents import agent
from conveyor.errors import (
    ConfigError,
    ConveyorError,
    InvalidInput,
    NotMigrated,
    RunFailed,
    RunTimeout,
    ServiceUnavailable,
    TransientError,
    UnknownAgent,
)


def rebuilt(exc: BaseException) -> BaseException:
    """What Celery does with a stored failure: cls(*args) after a JSON round trip of args."""
    return type(exc)(*json.loads(json.dumps(list(exc.args))))


def test_invalid_input_message() -> None:
    error = InvalidInput(
        "unit.err.a",
        [{"loc": ("text",), "msg": "Field required"}, {"loc": ("opts", 0), "msg": "bad"}],
    )
    assert str(error) == "invalid input for unit.err.a: text: Field required; opts.0: bad"


def test_invalid_input_without_location() -> None:
    error = InvalidInput("unit.err.a", [{"loc": (), "msg": "takes at most 1 positional values"}])
    assert str(error) == "invalid input for unit.err.a: <input>: takes at most 1 positional values"


def test_invalid_input_round_trips_through_its_args() -> None:
    error = InvalidInput("unit.err.a", [{"loc": ("x",), "msg": "Field required"}])
    again = InvalidInput(*error.args)
    assert str(again) == str(error)
    assert (again.agent, again.errors) == (error.agent, error.errors)


def test_real_invalid_input_survives_a_json_round_trip() -> None:
    @agent(name="unit.err.typed")
    def typed(text: str, n: int) -> str:
        return text * n

    with pytest.raises(InvalidInput) as caught:
        typed.validate_input({"n": "x"})
    again = rebuilt(caught.value)
    assert isinstance(again, InvalidInput)
    assert str(again) == str(caught.value)
    assert "text" in str(again)
    assert "n:" in str(again)


@pytest.mark.parametrize(
    "error",
    [
        ConveyorError("x"),
        ConfigError("invalid setting CONVEYOR_X: y"),
        ServiceUnavailable("broker down"),
        NotMigrated("old"),
        TransientError("again"),
        RunTimeout("1 run(s) not finished"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_plain_errors_round_trip(error: ConveyorError) -> None:
    again = rebuilt(error)
    assert type(again) is type(error)
    assert str(again) == str(error)


def test_unknown_agent_message() -> None:
    assert str(UnknownAgent("a.b", ["a.c", "a.d"])) == "unknown agent 'a.b'; did you mean a.c, a.d?"
    assert str(UnknownAgent("a.b", [])) == "unknown agent 'a.b'"


def test_run_failed_message() -> None:
    error = RunFailed("r-1", "failed", None)
    assert str(error) == "run r-1 failed: no error recorded"
    assert (error.run_id, error.status, error.error) == ("r-1", "failed", None)


@pytest.mark.parametrize(
    "error",
    [UnknownAgent("a.b", ["a.c"]), RunFailed("r-1", "failed", "boom")],
    ids=lambda e: type(e).__name__,
)
def test_errors_with_fields_round_trip(error: Any) -> None:
    again = rebuilt(error)
    assert type(again) is type(error)
    assert str(again) == str(error)
