"""Built-in features stand alone: each owns its tables and agents and is loaded through its own
`conveyor.agents` entry point, like any plugin, but even with third-party plugins off."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

from conveyor import agents
from conveyor.errors import ConfigError

PACKAGE = Path(agents.__file__).parent
BUILTINS = {
    "ping": "conveyor.ping",
    "memory": "conveyor.memory.agents",
    "vector": "conveyor.vector.agents",
    "analytics": "conveyor.analytics.agents",
}
FEATURES = ("memory", "vector", "analytics", "dlq")


def _imports(path: Path) -> set[str]:
    """The modules a source file imports (absolute imports, at any depth)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_each_builtin_feature_has_its_own_entry_point() -> None:
    found = {ep.name: ep.value for ep in entry_points(group=agents.ENTRY_POINT_GROUP)}
    for name, module in BUILTINS.items():
        assert found.get(name) == module
    assert "builtin" not in found


def test_builtin_agents_load_with_plugins_off() -> None:
    """In a fresh process (this one's registry already holds the built-ins): with
    CONVEYOR_LOAD_PLUGINS=false the built-ins register, the example plugin does not."""
    script = (
        "import json; from conveyor.agents import discover_agents; "
        "print(json.dumps(sorted(discover_agents(plugins=False).names())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    names = set(json.loads(out))
    assert {"memory.remember", "vector.search", "analytics.rollup", "conveyor.ping"} <= names
    assert not any(name.startswith("examples.") for name in names)


def test_plugins_off_skips_third_party_entry_points_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A conveyor.* entry point is loaded (here: fails loudly) even with plugins off; another
    package's is not touched."""
    builtin = EntryPoint("broken", "conveyor.no_such_module", agents.ENTRY_POINT_GROUP)
    third = EntryPoint("third", "no_such_plugin_pkg.agents", agents.ENTRY_POINT_GROUP)
    monkeypatch.setattr(agents, "entry_points", lambda group: [third])
    agents.discover_agents(plugins=False)
    monkeypatch.setattr(agents, "entry_points", lambda group: [third, builtin])
    with pytest.raises(ConfigError, match="agent plugin 'broken'"):
        agents.discover_agents(plugins=False)


def test_the_tasks_package_is_gone() -> None:
    assert importlib.util.find_spec("conveyor.tasks") is None
    source = (PACKAGE / "agents.py").read_text()
    assert 'import_module("conveyor.tasks")' not in source
    assert "conveyor.tasks" not in source


def test_each_feature_owns_its_tables() -> None:
    for feature in FEATURES:
        assert (PACKAGE / feature / "table.py").is_file()
    for moved in ("memory", "vector", "analytics", "deadletters"):
        assert not (PACKAGE / "models" / f"{moved}.py").exists()


def test_lower_layers_import_no_feature() -> None:
    """conveyor.models (but the alembic env, run only by alembic) and conveyor.config import
    no feature package; the vector agents do not import conveyor.app, which sits above them."""
    features = tuple(f"conveyor.{feature}" for feature in FEATURES)
    lower = [PACKAGE / "config.py", *(PACKAGE / "models").glob("*.py")]
    for path in lower:
        assert not {m for m in _imports(path) if m.startswith(features)}, path
    assert "conveyor.app" not in _imports(PACKAGE / "vector" / "agents.py")
