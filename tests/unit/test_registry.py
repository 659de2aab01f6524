"""The agent registry: unique names, lookups with close matches."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.agents import Registry, agent, registry
from conveyor.errors import ConfigError, UnknownAgent


def test_builtin_ping_is_registered() -> None:
    assert "conveyor.ping" in registry
    assert registry.get("conveyor.ping").pool == "default"


def test_names_are_sorted_and_iteration_yields_specs() -> None:
    @agent(name="unit.reg.b")
    def b() -> None: ...

    @agent(name="unit.reg.a")
    def a() -> None: ...

    names = registry.names()
    assert names == sorted(names)
    assert {"unit.reg.a", "unit.reg.b"} <= set(names)
    assert {spec.name for spec in registry} == set(names)


def test_name_clash_with_a_different_function_raises() -> None:
    @agent(name="unit.reg.clash")
    def first(x: int) -> int:
        return x

    with pytest.raises(ConfigError) as caught:

        @agent(name="unit.reg.clash")
        def second(x: int) -> int:
            return -x

    message = str(caught.value)
    assert "'unit.reg.clash'" in message
    assert first.fn.__qualname__ in message
    assert registry.get("unit.reg.clash") is first


def test_registering_the_same_function_again_is_allowed() -> None:
    """A module imported twice (e.g. reloaded) registers the same function again."""

    def work(x: int) -> int:
        return x

    agent(name="unit.reg.again")(work)
    again = agent(name="unit.reg.again")(work)
    assert registry.get("unit.reg.again") is again


@pytest.fixture
def two_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Two modules, each with a function `handle` registered under the same agent name."""
    names = ["unit_clash_mod_a", "unit_clash_mod_b"]
    for n, name in enumerate(names):
        (tmp_path / f"{name}.py").write_text(
            "from conveyor import agent\n\n\n"
            '@agent(name="unit.reg.samequalname")\n'
            f"def handle(x: int) -> int:\n    return x + {n}\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield names
    for name in names:
        sys.modules.pop(name, None)


def test_name_clash_across_modules_with_the_same_qualname_raises(two_modules: list[str]) -> None:
    __import__(two_modules[0])
    with pytest.raises(ConfigError):
        __import__(two_modules[1])
    assert registry.get("unit.reg.samequalname").fn.__module__ == two_modules[0]


def test_unknown_agent_lists_close_matches() -> None:
    @agent(name="unit.reg.summarise")
    def summarise(text: str) -> str:
        return text

    with pytest.raises(UnknownAgent) as caught:
        registry.get("unit.reg.sumarise")
    error = caught.value
    assert error.name == "unit.reg.sumarise"
    assert "unit.reg.summarise" in error.close_matches
    assert "unit.reg.sumarise" in str(error)
    assert "did you mean" in str(error)
    assert "unit.reg.summarise" in str(error)


def test_unknown_agent_without_close_matches_has_no_hint() -> None:
    with pytest.raises(UnknownAgent) as caught:
        registry.get("zzzzzzzzzzzzzzzzzz")
    assert caught.value.close_matches == []
    assert "did you mean" not in str(caught.value)


def test_a_separate_registry_is_independent() -> None:
    @agent(name="unit.reg.own")
    def own() -> None: ...

    local = Registry()
    assert "unit.reg.own" not in local
    local.add(own)
    assert local.get("unit.reg.own") is own
    assert local.names() == ["unit.reg.own"]
    with pytest.raises(UnknownAgent):
        local.get("conveyor.ping")
