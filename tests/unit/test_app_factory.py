"""create_app is a pure factory: importing conveyor.app connects nothing, building an app
starts and migrates nothing; starting the embedded services is resolve_services' step."""

from __future__ import annotations

import subprocess
import sys
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from celery.signals import after_setup_logger, after_setup_task_logger, before_task_publish

import conveyor.app
from conveyor.app import create_app, resolve_services
from conveyor.cli.health import probe_app
from conveyor.config import is_redis_url, load_settings
from conveyor.embedded import EmbeddedState
from conveyor.errors import ConfigError
from tests.unit.support import FAKE_AMQP, FAKE_BROKER, FAKE_DATABASE, build_app

SIGNALS = (before_task_publish, after_setup_logger, after_setup_task_logger)
ROOT = Path(__file__).resolve().parents[2]


def receivers(signal: Any) -> list[Any]:
    """The functions connected to `signal` (Celery keeps weak or strong references)."""
    found = (receiver for _, receiver in signal.receivers)
    return [r() if isinstance(r, weakref.ReferenceType) else r for r in found]


@pytest.fixture
def nothing_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting the embedded services or migrating fails the test."""

    def refuse(*_: Any) -> Any:
        raise AssertionError("embedded services started or a database migrated")

    monkeypatch.setattr("conveyor.app.Embedded.ensure", refuse)
    monkeypatch.setattr("conveyor.app.upgrade", refuse)


def test_importing_the_app_module_connects_no_receiver() -> None:
    check = (
        "import conveyor.app\n"
        "from celery import signals as s\n"
        "for signal in (s.before_task_publish, s.after_setup_logger, s.after_setup_task_logger,\n"
        "               s.task_revoked):\n"
        "    assert not signal.receivers, (signal.name, signal.receivers)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_create_app_starts_and_migrates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None, nothing_started: None
) -> None:
    app = build_app(tmp_path, monkeypatch)
    assert app.embedded is False
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("urls", "named"),
    [
        ({"broker_url": FAKE_BROKER}, "CONVEYOR_DATABASE_URL unset"),
        ({"database_url": FAKE_DATABASE}, "CONVEYOR_BROKER_URL unset"),
        ({}, "CONVEYOR_BROKER_URL and CONVEYOR_DATABASE_URL unset"),
    ],
)
def test_create_app_refuses_unset_urls_instead_of_starting_services(
    urls: dict[str, str], named: str, tmp_path: Path, nothing_started: None
) -> None:
    with pytest.raises(ConfigError, match=named) as error:
        create_app(load_settings(data_dir=tmp_path / "data", **urls))
    assert "resolve_services" in str(error.value)
    assert not (tmp_path / "data").exists()


def test_receivers_are_connected_once_however_many_apps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    build_app(tmp_path, monkeypatch)
    once = [len(signal.receivers) for signal in SIGNALS]
    build_app(tmp_path, monkeypatch)
    build_app(tmp_path, monkeypatch, broker_url=FAKE_AMQP)
    assert [len(signal.receivers) for signal in SIGNALS] == once
    stamp = conveyor.app._stamp_enqueue_time
    assert receivers(before_task_publish).count(stamp) == 1


def test_configured_settings_resolve_to_themselves(tmp_path: Path, nothing_started: None) -> None:
    settings = load_settings(
        broker_url=FAKE_BROKER, database_url=FAKE_DATABASE, data_dir=tmp_path / "data"
    )
    assert resolve_services(settings) is settings
    assert settings.embedded is False


def test_resolve_services_starts_the_embedded_default_and_marks_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    migrated: list[str] = []
    state = EmbeddedState(
        postgres_url="postgresql+psycopg://u@127.0.0.1:1/embedded",
        postgres_pid=1,
        redis_url="redis+socket:///nowhere/redis.sock",
        redis_pid=1,
        started_at=datetime.now(UTC),
    )
    monkeypatch.setattr("conveyor.app.Embedded.ensure", lambda _: state)
    monkeypatch.setattr("conveyor.app.upgrade", migrated.append)
    given = load_settings(broker_url=FAKE_BROKER, data_dir=tmp_path / "data")
    settings = resolve_services(given)
    assert migrated == [state.postgres_url]
    assert (settings.broker_url, settings.database_url) == (FAKE_BROKER, state.postgres_url)
    assert settings.embedded is True
    assert given.embedded is False
    app = create_app(settings)
    assert app.embedded is True
    assert app.conf.result_backend == FAKE_BROKER  # create_app still fills the defaults


@pytest.mark.parametrize(
    ("url", "redis"),
    [
        ("redis://h:6379/0", True),
        ("rediss://h:6380/0", True),
        ("redis+socket:///tmp/redis.sock", True),
        ("REDIS://h/0", True),
        ("amqp://guest@h//", False),
        ("pyamqp://h//", False),
        ("postgresql://u@h/x", False),
        ("", False),
        (None, False),
    ],
)
def test_one_answer_to_is_it_redis(url: str | None, redis: bool) -> None:
    assert is_redis_url(url) is redis


def test_the_health_probe_app_has_the_celery_settings_of_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    overrides = "result_expires = 123\nbroker_connection_timeout = 7\n"
    app = build_app(tmp_path, monkeypatch, celeryconfig=overrides, queue_prefix="h.")
    conf_dir = tmp_path / "celeryconfig_dir"  # where build_app wrote the module
    monkeypatch.syspath_prepend(str(conf_dir))
    sys.modules.pop("celeryconfig", None)
    try:
        probe = probe_app(app.settings)
    finally:
        sys.modules.pop("celeryconfig", None)
    for key in (
        "broker_url",
        "broker_transport_options",
        "broker_connection_timeout",
        "control_exchange",
        "event_exchange",
        "task_queues",
        "result_expires",
    ):
        assert probe.conf[key] == app.conf[key], key
    assert probe.conf.result_expires == 123
