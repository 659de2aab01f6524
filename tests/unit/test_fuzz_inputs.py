"""Fuzzing the two doors input comes through: a task message's args and kwargs on the worker,
and the JSON argument of `conveyor submit`.

On the worker, whatever JSON arrives, binding, recording and validating it (the path of
conveyor.workers.pipeline) raises nothing but InvalidInput, whose errors stay
JSON (Celery sends them back as JSON). On the command line, any text is a usage error naming
the JSON argument (exit 2) or an invalid-input error naming the field (exit 1): never a
traceback.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conveyor.agents import Agent, registry
from conveyor.app import ConveyorApp
from conveyor.cli import cli
from conveyor.config import load_settings
from conveyor.errors import InvalidInput
from conveyor.workers.steps import bind_input
from tests.unit.support import build_app

AGENTS = [
    "conveyor.ping",
    "memory.remember",
    "memory.recall",
    "memory.search",
    "vector.upsert",
    "vector.search",
    "analytics.report",
]
CLI_AGENT = "memory.remember"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def field_names(spec: Agent) -> list[str]:
    return list(spec.input_model.model_fields) or ["x"]


@st.composite
def calls(draw: st.DrawFn) -> tuple[Agent, list[Any], dict[str, Any]]:
    """An agent, and args and kwargs as a task message could carry them: keys are mostly the
    agent's own field names, so the fuzz reaches the field validators."""
    spec = registry.get(draw(st.sampled_from(AGENTS)))
    keys = st.sampled_from(field_names(spec)) | st.text(max_size=8)
    args = draw(st.lists(json_values, max_size=3))
    kwargs = draw(st.dictionaries(keys, json_values, max_size=5))
    return spec, args, kwargs


@pytest.fixture(scope="module")
def context() -> dict[str, Any]:
    return {"settings": load_settings()}


@FUZZ
@given(call=calls())
def test_worker_input_path_raises_only_invalid_input(
    call: tuple[Agent, list[Any], dict[str, Any]], context: dict[str, Any]
) -> None:
    spec, args, kwargs = call
    try:
        payload = bind_input(spec, tuple(args), kwargs)
        spec.recorded_input(payload)
        spec.validate_input(payload, context)
    except InvalidInput as exc:
        assert exc.agent == spec.name
        assert str(exc).startswith(f"invalid input for {spec.name}: ")
        json.dumps(exc.errors)


def test_the_same_path_accepts_a_valid_call(context: dict[str, Any]) -> None:
    """The property above is not vacuous: a well-formed call binds and validates."""
    spec = registry.get("memory.recall")
    payload = bind_input(spec, ("ns", "session-1"), {"last": 5})
    model = spec.validate_input(payload, context)
    assert (model.namespace, model.session, model.last) == ("ns", "session-1", 5)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def unit_app(tmp_path_factory: pytest.TempPathFactory) -> ConveyorApp:
    tmp = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as monkeypatch:
        return build_app(tmp, monkeypatch)


def invoke_submit(app: ConveyorApp, text: str) -> Any:
    return CliRunner().invoke(cli, ["submit", CLI_AGENT, "--", text], obj=app)


def is_valid_for(app: ConveyorApp, text: str) -> bool:
    """True for text the agent would accept: submitting it would need a broker."""
    try:
        data = json.loads(text)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    try:
        app.agents.get(CLI_AGENT).validate_input(data, app.validation_context)
    except InvalidInput:
        return False
    return True


json_texts = json_values.map(json.dumps) | st.dictionaries(
    st.sampled_from([*field_names(registry.get(CLI_AGENT)), "x"]), json_values, max_size=5
).map(json.dumps)


@FUZZ
@given(text=st.text(max_size=60) | json_texts)
def test_cli_json_input_is_a_clear_error_never_a_traceback(
    unit_app: ConveyorApp, text: str
) -> None:
    assume(not is_valid_for(unit_app, text))
    result = invoke_submit(unit_app, text)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "Invalid value for JSON" in result.output
    else:
        assert result.exit_code == 1, result.output
        assert f"invalid input for {CLI_AGENT}: " in result.output


@pytest.mark.parametrize(
    ("text", "code", "named"),
    [
        ("{not json", 2, "not valid JSON"),
        ("[1, 2]", 2, "must be a JSON object"),
        ('{"namespace": 5}', 1, "namespace"),
        ("NaN", 2, "must be a JSON object"),
    ],
)
def test_cli_json_errors_name_the_problem(
    unit_app: ConveyorApp, text: str, code: int, named: str
) -> None:
    result = invoke_submit(unit_app, text)
    assert (result.exit_code, named in result.output) == (code, True), result.output


def test_non_finite_numbers_are_refused_by_validation(context: dict[str, Any]) -> None:
    spec = registry.get("memory.recall")
    with pytest.raises(InvalidInput):
        spec.validate_input({name: math.inf for name in field_names(spec)}, context)


def test_the_fuzzed_agents_exist() -> None:
    assert all(registry.get(name).name == name for name in AGENTS)
