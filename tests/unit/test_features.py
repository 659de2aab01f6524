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
from conveyor.analytics.settings import AnalyticsSettings
from conveyor.app import ConveyorApp
from conveyor.config import Settings, check_sections, load_section
from conveyor.errors import ConfigError
from conveyor.memory import MemorySettings, RememberRequest
from conveyor.workers.supervisor import worker_env
from tests.unit.support import build_app

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


def _env_names(cls: type[Settings] | type[MemorySettings] | type[AnalyticsSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix"))
    return {f"{prefix}{name.upper()}" for name in cls.model_fields}


def test_each_feature_declares_its_own_settings() -> None:
    """Memory's and analytics' settings live in their packages, under the same CONVEYOR_*
    names as before, and none of them is a field of the core Settings any more."""
    assert MemorySettings.__module__ == "conveyor.memory.settings"
    assert AnalyticsSettings.__module__ == "conveyor.analytics.settings"
    assert _env_names(MemorySettings) == {
        "CONVEYOR_MEMORY_MAX_CONTENT_BYTES",
        "CONVEYOR_MEMORY_MAX_BATCH",
        "CONVEYOR_MEMORY_MAX_TTL_SECONDS",
        "CONVEYOR_MEMORY_MAX_WINDOW",
    }
    assert _env_names(AnalyticsSettings) == {
        "CONVEYOR_RETENTION_DAYS",
        "CONVEYOR_RETENTION_FAILED_DAYS",
        "CONVEYOR_RETENTION_BATCH",
        "CONVEYOR_SLO_DEFAULT_SECONDS",
        "CONVEYOR_SLO_SECONDS",
    }
    features = ("memory_", "retention_", "slo_")
    assert not [name for name in Settings.model_fields if name.startswith(features)]
    assert not _env_names(Settings) & (_env_names(MemorySettings) | _env_names(AnalyticsSettings))


def test_a_bad_feature_setting_fails_when_the_app_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("CONVEYOR_MEMORY_MAX_BATCH", "0")
    with pytest.raises(ConfigError, match="invalid setting CONVEYOR_MEMORY_MAX_BATCH: "):
        load_section(MemorySettings)
    with pytest.raises(ConfigError, match="CONVEYOR_MEMORY_MAX_BATCH: Input should be"):
        build_app(tmp_path, monkeypatch)
    monkeypatch.setenv("CONVEYOR_MEMORY_MAX_BATCH", "1")
    monkeypatch.setenv("CONVEYOR_SLO_SECONDS", "{not json")
    with pytest.raises(ConfigError, match="CONVEYOR_SLO_SECONDS"):
        build_app(tmp_path, monkeypatch)


def test_feature_settings_reach_validation_and_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """The app built, a request is validated against the environment's memory limits (no
    context needed), and a worker process started by the supervisor gets the same variable."""
    payload = {"namespace": "n", "session": "s", "items": [{"content": "x"}] * 3}
    monkeypatch.setenv("CONVEYOR_MEMORY_MAX_BATCH", "2")
    try:
        app: ConveyorApp = build_app(tmp_path, monkeypatch)
        with pytest.raises(ValueError, match=r"the limit is 2 \(CONVEYOR_MEMORY_MAX_BATCH\)"):
            RememberRequest.model_validate(payload, context=app.validation_context)
        assert worker_env(app)["CONVEYOR_MEMORY_MAX_BATCH"] == "2"
    finally:
        monkeypatch.delenv("CONVEYOR_MEMORY_MAX_BATCH")
        check_sections()  # this process's sections back to the clean environment's
    RememberRequest.model_validate(payload, context=app.validation_context)
