"""Entry-point discovery: the example plugin is registered, and stale or broken plugins."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points

import pytest

from conveyor import agents
from conveyor.errors import ConfigError


def _only(*eps: EntryPoint) -> object:
    return lambda group: list(eps)


def test_the_example_agents_are_registered_through_the_entry_point() -> None:
    """In a fresh process: this one's registry is reset between tests."""
    found = {ep.name: ep.value for ep in entry_points(group=agents.ENTRY_POINT_GROUP)}
    assert found["examples"] == "conveyor_examples.agents"
    script = (
        "import json; from conveyor.agents import discover_agents; r = discover_agents(); "
        "print(json.dumps({n: [r.get(n).pool, r.get(n).is_async, r.get(n).retries] "
        "for n in r.names() if n.startswith('examples.')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    assert json.loads(out) == {
        "examples.fetch": ["io", True, 3],
        "examples.flaky": ["default", False, 4],
        "examples.ingest": ["vector", False, 3],
        "examples.research": ["io", True, 2],
    }


def test_a_plugin_whose_package_is_absent_is_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stale = EntryPoint("gone", "no_such_plugin_pkg.agents", agents.ENTRY_POINT_GROUP)
    monkeypatch.setattr(agents, "entry_points", _only(stale))
    agents.discover_agents()
    assert "no_such_plugin_pkg" in caplog.text


def test_a_plugin_that_fails_inside_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint("broken", "conveyor.no_such_module", agents.ENTRY_POINT_GROUP)
    monkeypatch.setattr(agents, "entry_points", _only(broken))
    with pytest.raises(ConfigError, match="agent plugin 'broken'"):
        agents.discover_agents()
