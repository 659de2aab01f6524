"""Helpers shared by the unit tests: fake service URLs and building an app on them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor.app import ConveyorApp, create_app
from conveyor.config import load_settings

FAKE_BROKER = "redis://127.0.0.1:1/0"
FAKE_DATABASE = "postgresql://u@127.0.0.1:1/x"
FAKE_AMQP = "amqp://guest@127.0.0.1:1//"


def build_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, celeryconfig: str = "", **settings: Any
) -> ConveyorApp:
    """create_app on fake URLs, with `celeryconfig` as the only celeryconfig module in reach.

    The module lives in its own directory under tmp_path, put first on sys.path, so a
    celeryconfig.py in the working directory cannot change what the test sees.
    """
    conf_dir = tmp_path / "celeryconfig_dir"
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "celeryconfig.py").write_text(celeryconfig)
    monkeypatch.syspath_prepend(str(conf_dir))
    sys.modules.pop("celeryconfig", None)
    settings.setdefault("broker_url", FAKE_BROKER)
    settings.setdefault("database_url", FAKE_DATABASE)
    settings.setdefault("data_dir", tmp_path / "data")
    try:
        return create_app(load_settings(**settings))
    finally:
        sys.modules.pop("celeryconfig", None)
