"""@agent: the input model inferred from the signature, validation, invocation and output."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from conveyor.agents import Agent, agent, registry
from conveyor.errors import ConfigError, InvalidInput


class Query(BaseModel):
    text: str
    k: int = 3


class Answer(BaseModel):
    text: str
    score: float
    at: datetime


def invalid(spec: Agent, data: dict[str, Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        spec.validate_input(data)
    return caught.value


def test_sync_function_input_model_from_annotations() -> None:
    @agent(name="unit.dec.greet")
    def greet(name: str, times: int = 1) -> str:
        return " ".join([f"hi {name}"] * times)

    assert isinstance(greet, Agent)
    assert registry.get("unit.dec.greet") is greet
    assert greet.is_async is False
    assert greet.model_param is None
    fields = greet.input_model.model_fields
    assert list(fields) == ["name", "times"]
    assert fields["name"].is_required()
    assert fields["times"].default == 1
    model = greet.validate_input({"name": "ada", "times": "2"})
    assert (model.name, model.times) == ("ada", 2)  # type: ignore[attr-defined]
    assert greet.invoke(model) == "hi ada hi ada"
    assert greet("bob") == "hi bob"  # the Agent stays callable as the plain function


def test_async_function() -> None:
    @agent(name="unit.dec.double")
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert double.is_async is True
    assert list(double.input_model.model_fields) == ["x"]
    pending = double.invoke(double.validate_input({"x": 21}))
    assert inspect.iscoroutine(pending)
    assert double.dump_output(asyncio.run(pending)) == 42


def test_single_basemodel_parameter_is_the_input_model() -> None:
    @agent(name="unit.dec.search")
    def search(q: Query) -> list[str]:
        return [q.text] * q.k

    assert search.input_model is Query
    assert search.model_param == "q"
    model = search.validate_input({"text": "cats"})
    assert isinstance(model, Query)
    assert search.invoke(model) == ["cats", "cats", "cats"]
    error = invalid(search, {"k": 1})
    assert "text" in str(error)


def test_var_keyword_allows_extra_fields() -> None:
    seen: dict[str, Any] = {}

    @agent(name="unit.dec.echo")
    def echo(prefix: str, **rest: Any) -> dict[str, Any]:
        seen.update(rest)
        return {"prefix": prefix, **rest}

    model = echo.validate_input({"prefix": ">", "a": 1, "b": [2]})
    assert echo.invoke(model) == {"prefix": ">", "a": 1, "b": [2]}
    assert seen == {"a": 1, "b": [2]}
    assert "prefix" in str(invalid(echo, {"a": 1}))


def test_without_var_keyword_extra_fields_are_refused() -> None:
    @agent(name="unit.dec.strict")
    def strict(x: int) -> int:
        return x

    error = invalid(strict, {"x": 1, "surprise": True})
    assert "surprise" in str(error)


def test_missing_field_names_the_field_and_the_agent() -> None:
    @agent(name="unit.dec.summarise")
    def summarise(text: str, max_words: int = 50) -> str:
        return text

    error = invalid(summarise, {})
    assert error.agent == "unit.dec.summarise"
    assert [e["loc"] for e in error.errors] == [("text",)]
    assert str(error).startswith("invalid input for unit.dec.summarise: ")
    assert "text" in str(error)
    assert "max_words" not in str(error)


def test_wrong_type_names_the_field() -> None:
    @agent(name="unit.dec.typed")
    def typed(text: str, max_words: int = 50) -> str:
        return text

    error = invalid(typed, {"text": "t", "max_words": "many"})
    assert [e["loc"] for e in error.errors] == [("max_words",)]
    assert "max_words" in str(error)
    assert "integer" in str(error)


def test_invalid_input_does_not_chain_the_pydantic_error() -> None:
    @agent(name="unit.dec.nochain")
    def nochain(x: int) -> int:
        return x

    error = invalid(nochain, {})
    assert error.__cause__ is None
    assert all("input" not in e and "url" not in e for e in error.errors)


def test_basemodel_return_is_dumped_to_a_json_dict() -> None:
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    @agent(name="unit.dec.answer")
    def answer(question: str) -> Answer:
        return Answer(text=question.upper(), score=1, at=at)

    output = answer.dump_output(answer.invoke(answer.validate_input({"question": "why"})))
    assert output == {"text": "WHY", "score": 1.0, "at": "2024-05-01T12:00:00Z"}
    assert type(output) is dict


def test_output_is_validated_against_the_return_annotation() -> None:
    @agent(name="unit.dec.count")
    def count(text: str) -> int:
        return len(text)

    assert count.dump_output("7") == 7
    with pytest.raises(ValidationError):
        count.dump_output("seven")


@pytest.mark.parametrize("returns", ["none", "missing"])
def test_no_or_none_return_annotation_passes_any_output(returns: str) -> None:
    if returns == "none":

        def fn(x: int) -> None:
            return None
    else:

        def fn(x: int):  # type: ignore[no-untyped-def]
            return {"x": x}

    spec = agent(name=f"unit.dec.ret.{returns}")(fn)
    assert spec.dump_output({"x": 1}) == {"x": 1}
    assert spec.dump_output(None) is None


def test_bare_decorator_names_the_agent_by_module_and_qualname() -> None:
    @agent
    def bare(x: int) -> int:
        return x

    assert bare.name == f"{__name__}.{bare.fn.__qualname__}"
    assert bare.pool == "default"
    assert bare.name in registry  # removed again by the restore_registry fixture


def test_options_are_kept() -> None:
    @agent(
        name="unit.dec.opts",
        pool="memory",
        retries=0,
        soft_time_limit=5,
        time_limit=10,
        priority=9,
        rate_limit="10/m",
        idempotent=False,
        retry_on=(KeyError,),
    )
    def opts(x: int) -> int:
        return x

    assert (opts.pool, opts.retries, opts.priority) == ("memory", 0, 9)
    assert (opts.soft_time_limit, opts.time_limit, opts.rate_limit) == (5, 10, "10/m")
    assert opts.idempotent is False
    assert opts.retry_on == (KeyError,)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"retries": -1}, "retries"),
        ({"soft_time_limit": 10, "time_limit": 10}, "soft_time_limit"),
        ({"soft_time_limit": 20, "time_limit": 10}, "soft_time_limit"),
    ],
)
def test_invalid_options_raise_config_error(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:

        @agent(name="unit.dec.bad", **options)
        def bad(x: int) -> int:
            return x

    assert "unit.dec.bad" in str(caught.value)
    assert fragment in str(caught.value)
    assert "unit.dec.bad" not in registry


def test_positional_only_and_var_positional_parameters_are_refused() -> None:
    def positional_only(x: int, /) -> int:
        return x

    def var_positional(*xs: int) -> int:
        return sum(xs)

    for fn in (positional_only, var_positional):
        with pytest.raises(ConfigError, match="keyword"):
            agent(name=f"unit.dec.{fn.__name__}")(fn)
