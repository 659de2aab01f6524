"""The names `conveyor` exports. Changing this list is an API change: update it on purpose."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import pytest

import conveyor

README = Path(__file__).resolve().parents[2] / "README.md"

PUBLIC_API = [
    "Agent",
    "Client",
    "ConfigError",
    "ConveyorApp",
    "ConveyorError",
    "InvalidInput",
    "NotMigrated",
    "Pool",
    "Run",
    "RunContext",
    "RunFailed",
    "RunHandle",
    "RunStatus",
    "RunTimeout",
    "ServiceUnavailable",
    "Settings",
    "TransientError",
    "UnknownAgent",
    "agent",
    "create_app",
    "current_run",
    "effect_once",
    "load_settings",
    "registry",
    "resolve_services",
]


def test_all_is_pinned() -> None:
    assert conveyor.__all__ == PUBLIC_API


def test_all_is_sorted() -> None:
    assert conveyor.__all__ == sorted(conveyor.__all__)


@pytest.mark.parametrize("name", PUBLIC_API)
def test_name_is_importable_from_conveyor(name: str) -> None:
    module = importlib.import_module("conveyor")
    assert getattr(module, name) is not None


def test_star_import_gives_exactly_the_public_api() -> None:
    namespace: dict[str, object] = {}
    exec("from conveyor import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == PUBLIC_API


def test_every_exported_exception_is_a_conveyor_error() -> None:
    exported = [getattr(conveyor, n) for n in PUBLIC_API]
    errors = {e.__name__ for e in exported if isinstance(e, type) and issubclass(e, BaseException)}
    assert errors == {
        "ConfigError",
        "ConveyorError",
        "InvalidInput",
        "NotMigrated",
        "RunFailed",
        "RunTimeout",
        "ServiceUnavailable",
        "TransientError",
        "UnknownAgent",
    }
    assert all(issubclass(getattr(conveyor, e), conveyor.ConveyorError) for e in errors)


def test_readme_lists_the_fields_of_current_run() -> None:
    """The README's `current_run()` line names exactly RunContext's fields, `id` as on Run."""
    text = " ".join(README.read_text().split())
    listed = re.search(r"`current_run\(\)` inside an agent gives the run \(([^)]*)\)", text)
    assert listed is not None, "the README line about current_run() has moved or changed"
    fields = [f.name for f in dataclasses.fields(conveyor.RunContext)]
    assert sorted(listed.group(1).split(", ")) == sorted(fields)
    assert "id" in fields and "id" in conveyor.Run.model_fields
