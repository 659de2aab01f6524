"""bind_input: turning a Celery call's (args, kwargs) into the agent's JSON payload."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from conveyor.agents import Agent, agent
from conveyor.errors import InvalidInput
from conveyor.workers.steps import bind_input


class Query(BaseModel):
    text: str
    k: int = 3


@pytest.fixture
def summarise() -> Agent:
    @agent(name="unit.bind.summarise")
    def summarise(text: str, max_words: int = 50, style: str = "plain") -> str:
        return text

    return summarise


@pytest.fixture
def combine() -> Agent:
    @agent(name="unit.bind.combine")
    def combine(results: list[Any], label: str = "all") -> dict[str, Any]:
        return {"label": label, "n": len(results)}

    return combine


def test_kwargs_only(summarise: Agent) -> None:
    assert bind_input(summarise, (), {"text": "t", "max_words": 5}) == {"text": "t", "max_words": 5}


def test_no_arguments_is_an_empty_payload(summarise: Agent) -> None:
    assert bind_input(summarise, (), {}) == {}


def test_chained_dict_is_merged_with_kwargs(summarise: Agent) -> None:
    previous_output = {"text": "from the previous step", "style": "bullets"}
    payload = bind_input(summarise, (previous_output,), {"max_words": 10})
    assert payload == {"text": "from the previous step", "style": "bullets", "max_words": 10}
    assert previous_output == {"text": "from the previous step", "style": "bullets"}


def test_kwargs_win_over_the_chained_dict(summarise: Agent) -> None:
    assert bind_input(summarise, ({"text": "old"},), {"text": "new"}) == {"text": "new"}


def test_chord_results_list_goes_to_the_results_field(combine: Agent) -> None:
    outputs = [{"a": 1}, {"b": 2}, 3]
    payload = bind_input(combine, (outputs,), {"label": "branches"})
    assert payload == {"results": outputs, "label": "branches"}
    assert combine.validate_input(payload).results == outputs  # type: ignore[attr-defined]


def test_a_list_without_a_results_field_is_positional() -> None:
    @agent(name="unit.bind.total")
    def total(values: list[int]) -> int:
        return sum(values)

    assert bind_input(total, ([1, 2],), {}) == {"values": [1, 2]}


def test_positional_values_map_to_fields_in_order(summarise: Agent) -> None:
    assert bind_input(summarise, ("t", 7), {}) == {"text": "t", "max_words": 7}
    assert bind_input(summarise, ("t", 7, "bullets"), {}) == {
        "text": "t",
        "max_words": 7,
        "style": "bullets",
    }


def test_positional_values_and_kwargs_combine(summarise: Agent) -> None:
    assert bind_input(summarise, ("t",), {"style": "bullets"}) == {"text": "t", "style": "bullets"}


def test_positional_values_for_a_basemodel_agent_use_the_model_fields() -> None:
    @agent(name="unit.bind.search")
    def search(q: Query) -> list[str]:
        return [q.text]

    assert bind_input(search, ("cats", 5), {}) == {"text": "cats", "k": 5}


def test_too_many_positional_values_is_invalid_input(summarise: Agent) -> None:
    with pytest.raises(InvalidInput) as caught:
        bind_input(summarise, ("t", 1, "plain", "extra"), {})
    error = caught.value
    assert error.agent == "unit.bind.summarise"
    assert "at most 3" in str(error)
    assert "got 4" in str(error)


def test_var_keyword_agent_takes_no_positional_values() -> None:
    @agent(name="unit.bind.echo")
    def echo(**payload: Any) -> dict[str, Any]:
        return payload

    assert bind_input(echo, ({"x": 1},), {"y": 2}) == {"x": 1, "y": 2}
    with pytest.raises(InvalidInput):
        bind_input(echo, ("loose",), {})
