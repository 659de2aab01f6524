"""Settings: CONVEYOR_* variables read by load_settings, and one-line ConfigErrors naming them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.config import Settings, load_settings
from conveyor.errors import ConfigError
from conveyor.pools import BUILTIN_POOLS

BUILTIN_NAMES = {"default", "io", "memory", "vector", "analytics"}


def config_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_defaults() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.broker_url is None
    assert settings.database_url is None
    assert settings.result_backend is None
    assert settings.data_dir == Path(".conveyor")
    assert settings.agent_modules == []
    assert settings.queue_prefix == ""
    assert settings.visibility_timeout == 3600
    assert settings.soft_time_limit == 240
    assert settings.time_limit == 300
    assert settings.log_level == "INFO"
    assert set(settings.pools) == BUILTIN_NAMES
    assert settings.pools == BUILTIN_POOLS
    assert settings.redis_broker is False


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_BROKER_URL", "amqp://guest@rabbit:5672//")
    monkeypatch.setenv("CONVEYOR_QUEUE_PREFIX", "staging.")
    monkeypatch.setenv("CONVEYOR_VISIBILITY_TIMEOUT", "7200")
    monkeypatch.setenv("CONVEYOR_SOFT_TIME_LIMIT", "50")
    monkeypatch.setenv("CONVEYOR_TIME_LIMIT", "60")
    monkeypatch.setenv("CONVEYOR_DATA_DIR", "/srv/conveyor")
    settings = load_settings()
    assert settings.broker_url == "amqp://guest@rabbit:5672//"
    assert settings.redis_broker is False
    assert settings.queue_prefix == "staging."
    assert settings.visibility_timeout == 7200
    assert (settings.soft_time_limit, settings.time_limit) == (50, 60)
    assert settings.data_dir == Path("/srv/conveyor")


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h/1", "redis+socket:///tmp/r.sock"])
def test_redis_broker_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("CONVEYOR_BROKER_URL", url)
    settings = load_settings()
    assert settings.broker_url == url
    assert settings.redis_broker is True


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("CONVEYOR_BROKER_URL", "http://broker:80", "'http'"),
        ("CONVEYOR_DATABASE_URL", "mysql://u@db/app", "'mysql'"),
        ("CONVEYOR_DATABASE_URL", "sqlite:///runs.db", "'sqlite'"),
        ("CONVEYOR_POOLS", "{not json", "JSON"),
        ("CONVEYOR_POOLS", '{"default": {"concurrency": 0}}', "concurrency"),
        ("CONVEYOR_POOLS", '{"default": {"concurrency": "many"}}', "concurrency"),
        ("CONVEYOR_POOLS", "[1, 2]", "object"),
        ("CONVEYOR_POOLS", '{"gpu": 3}', "gpu"),
        ("CONVEYOR_POOLS", '{"default": {"concurency": 3}}', "concurency"),
        ("CONVEYOR_AGENT_MODULES", "good.module,bad-module", "bad-module"),
        ("CONVEYOR_AGENT_MODULES", "1st.module", "1st.module"),
        ("CONVEYOR_QUEUE_PREFIX", "has space", "CONVEYOR_QUEUE_PREFIX"),
        ("CONVEYOR_QUEUE_PREFIX", "a:b", "CONVEYOR_QUEUE_PREFIX"),
        ("CONVEYOR_VISIBILITY_TIMEOUT", "an hour", "integer"),
        ("CONVEYOR_VISIBILITY_TIMEOUT", "0", "CONVEYOR_VISIBILITY_TIMEOUT"),
        ("CONVEYOR_LOG_LEVEL", "LOUD", "CONVEYOR_LOG_LEVEL"),
    ],
)
def test_invalid_setting_is_a_one_line_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    message = config_error(monkeypatch, name, value)
    assert "\n" not in message
    assert message.startswith(f"invalid setting {name}")
    assert fragment in message


@pytest.mark.parametrize(("soft", "hard"), [("300", "300"), ("301", "300"), ("240", "200")])
def test_soft_time_limit_must_be_below_hard(
    monkeypatch: pytest.MonkeyPatch, soft: str, hard: str
) -> None:
    monkeypatch.setenv("CONVEYOR_SOFT_TIME_LIMIT", soft)
    monkeypatch.setenv("CONVEYOR_TIME_LIMIT", hard)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "CONVEYOR_SOFT_TIME_LIMIT" in message
    assert "CONVEYOR_TIME_LIMIT" in message


def test_soft_limit_from_env_below_default_hard_limit_is_fine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_SOFT_TIME_LIMIT", "299.5")
    assert load_settings().soft_time_limit == 299.5


def test_config_error_hides_the_pydantic_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_BROKER_URL", "ftp://x")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("myapp.agents", ["myapp.agents"]),
        ("myapp.agents,other.mod", ["myapp.agents", "other.mod"]),
        (" a.b , c ,, ", ["a.b", "c"]),
        ("", []),
    ],
)
def test_agent_modules_are_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CONVEYOR_AGENT_MODULES", value)
    assert load_settings().agent_modules == expected


def test_agent_modules_accept_a_list_override() -> None:
    assert load_settings(agent_modules=["x.y", "z"]).agent_modules == ["x.y", "z"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@db:5432/app",
        "postgres://u:p@db:5432/app",
        "postgresql+psycopg://u:p@db:5432/app",
    ],
)
def test_database_url_is_normalised_to_psycopg(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", url)
    assert load_settings().database_url == "postgresql+psycopg://u:p@db:5432/app"


def test_user_pools_are_merged_over_the_builtin_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CONVEYOR_POOLS",
        json.dumps(
            {
                "gpu": {"concurrency": 1, "kind": "solo"},
                "memory": {"concurrency": 16},
            }
        ),
    )
    pools = load_settings().pools
    assert set(pools) == BUILTIN_NAMES | {"gpu"}
    assert pools["gpu"].name == "gpu"
    assert (pools["gpu"].concurrency, pools["gpu"].kind) == (1, "solo")
    # Overriding one field of a built-in pool keeps the others.
    assert pools["memory"].concurrency == 16
    assert pools["memory"].kind == BUILTIN_POOLS["memory"].kind == "threads"
    assert pools["default"] == BUILTIN_POOLS["default"]
    assert pools["vector"] == BUILTIN_POOLS["vector"]


def test_overriding_one_field_of_the_io_pool_keeps_it_asyncio() -> None:
    pools = load_settings(pools={"io": {"concurrency": 4000}, "default": {}}).pools
    assert (pools["io"].kind, pools["io"].concurrency) == ("asyncio", 4000)
    assert load_settings(pools={"io": {"max_replicas": 20}}).pools["io"].concurrency == 1000


def test_pools_override_as_python_dict() -> None:
    pools = load_settings(pools={"batch": {"concurrency": 3}}).pools
    assert pools["batch"].concurrency == 3
    assert set(pools) == BUILTIN_NAMES | {"batch"}


def test_pool_lookup() -> None:
    settings = load_settings()
    assert settings.pool("vector") is settings.pools["vector"]


def test_unknown_pool_error_lists_the_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_POOLS", '{"gpu": {}}')
    with pytest.raises(ConfigError) as caught:
        load_settings().pool("gpus")
    message = str(caught.value)
    assert "'gpus'" in message
    assert "analytics, default, gpu, io, memory, vector" in message
