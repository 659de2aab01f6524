"""Unit-test fixtures: a clean CONVEYOR_* environment, a restored agent registry, no network.

Unit tests touch no service. Apps are built against unreachable URLs; any socket connect fails
the test, so "no I/O" is checked, not assumed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The built-in agents (conveyor.ping and the memory, vector and analytics ones) are registered
# before any registry snapshot.
import conveyor.analytics.agents
import conveyor.memory.agents
import conveyor.ping
import conveyor.vector.agents  # noqa: F401
from conveyor.agents import registry
from conveyor.app import ConveyorApp
from tests.unit.support import build_app


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CONVEYOR_* variable of the shell running the tests leaks into them."""
    for key in list(os.environ):
        if key.upper().startswith("CONVEYOR_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def restore_registry() -> Iterator[None]:
    """Agents registered by a test (named unit.*) are removed after it."""
    saved = dict(registry._agents)
    yield
    registry._agents.clear()
    registry._agents.update(saved)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test on any attempt to open a socket connection (TCP or unix)."""

    def refuse(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"unit test tried to connect to {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def fake_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> ConveyorApp:
    """An app on unreachable broker and database URLs; building it must do no I/O."""
    return build_app(tmp_path, monkeypatch)
