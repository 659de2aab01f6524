"""celery_config and check_config: the Celery settings conveyor derives and the ones it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.agents import Agent, Registry, agent
from conveyor.app import celery_config, check_config
from conveyor.config import Settings, load_settings
from conveyor.errors import ConfigError
from tests.unit.support import FAKE_AMQP, FAKE_BROKER, FAKE_DATABASE


def settings_for(broker: str = FAKE_BROKER, **overrides: Any) -> Settings:
    return load_settings(broker_url=broker, database_url=FAKE_DATABASE, **overrides)


def registry_of(*specs: Agent) -> Registry:
    local = Registry()
    for spec in specs:
        local.add(spec)
    return local


@pytest.fixture
def agents() -> Registry:
    @agent(name="unit.cfg.recall", pool="memory")
    def recall(key: str) -> str:
        return key

    @agent(name="unit.cfg.plain")
    def plain(x: int) -> int:
        return x

    return registry_of(recall, plain)


def test_json_only(agents: Registry) -> None:
    config = celery_config(settings_for(), agents)
    for key in ("task_serializer", "result_serializer", "event_serializer"):
        assert config[key] == "json"
    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]


def test_work_is_not_lost(agents: Registry) -> None:
    config = celery_config(settings_for(), agents)
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1


def test_runs_are_observable(agents: Registry) -> None:
    config = celery_config(settings_for(), agents)
    assert config["task_track_started"] is True
    assert config["worker_send_task_events"] is True
    assert config["worker_consumer"] == "conveyor.workers.consumer:Consumer"


def test_urls_are_passed_through(agents: Registry) -> None:
    settings = settings_for(result_backend="redis://127.0.0.1:1/1")
    config = celery_config(settings, agents)
    assert config["broker_url"] == FAKE_BROKER
    assert config["result_backend"] == "redis://127.0.0.1:1/1"


@pytest.mark.parametrize("prefix", ["", "ci-7."])
def test_one_queue_per_pool_plus_the_catch_all(agents: Registry, prefix: str) -> None:
    settings = settings_for(queue_prefix=prefix, pools={"gpu": {"concurrency": 1}})
    config = celery_config(settings, agents)
    names = [q.name for q in config["task_queues"]]
    expected = {f"{prefix}{pool}" for pool in settings.pools} | {"celery"}
    assert sorted(names) == sorted(expected)
    assert len(names) == len(settings.pools) + 1
    assert all(q.routing_key == q.name for q in config["task_queues"])
    assert config["task_default_queue"] == f"{prefix}default"


@pytest.mark.parametrize("prefix", ["", "ci-7."])
def test_each_agent_is_routed_to_its_pools_queue(agents: Registry, prefix: str) -> None:
    config = celery_config(settings_for(queue_prefix=prefix), agents)
    assert config["task_routes"] == {
        "unit.cfg.recall": {"queue": f"{prefix}memory"},
        "unit.cfg.plain": {"queue": f"{prefix}default"},
    }


def test_redis_transport_options(agents: Registry) -> None:
    config = celery_config(settings_for(visibility_timeout=5400), agents)
    options = config["broker_transport_options"]
    assert options["visibility_timeout"] == 5400
    assert options["priority_steps"] == list(range(10))
    assert options["body_encoding"] == "utf-8", "bodies are not base64-encoded a second time"


def test_redis_socket_broker_gets_transport_options_too(agents: Registry) -> None:
    config = celery_config(settings_for("redis+socket:///tmp/unit-redis.sock"), agents)
    assert config["broker_transport_options"]["visibility_timeout"] == 3600


def test_default_config_passes_its_own_checks(agents: Registry) -> None:
    for broker in (FAKE_BROKER, FAKE_AMQP):
        settings = settings_for(broker)
        check_config(celery_config(settings, agents), settings, agents)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("accept_content", ["json", "pickle"]),
        ("accept_content", ["application/x-python-serialize", "pickle"]),
        ("result_accept_content", ["pickle"]),
        ("task_serializer", "pickle"),
        ("result_serializer", "pickle"),
        ("event_serializer", "pickle"),
    ],
)
def test_pickle_is_refused(agents: Registry, key: str, value: Any) -> None:
    settings = settings_for()
    config = celery_config(settings, agents) | {key: value}
    with pytest.raises(ConfigError) as caught:
        check_config(config, settings, agents)
    assert key in str(caught.value)
    assert "pickle" in str(caught.value)


def test_pickle_is_refused_on_amqp_too(agents: Registry) -> None:
    settings = settings_for(FAKE_AMQP)
    config = celery_config(settings, agents) | {"task_serializer": "pickle"}
    with pytest.raises(ConfigError, match="task_serializer"):
        check_config(config, settings, agents)


def test_visibility_timeout_must_exceed_an_agents_hard_limit() -> None:
    @agent(name="unit.cfg.long", time_limit=4000)
    def long(x: int) -> int:
        return x

    agents = registry_of(long)
    settings = settings_for(visibility_timeout=3600)
    with pytest.raises(ConfigError) as caught:
        check_config(celery_config(settings, agents), settings, agents)
    message = str(caught.value)
    assert "CONVEYOR_VISIBILITY_TIMEOUT" in message
    assert "unit.cfg.long" in message
    assert "3600" in message
    assert "4000" in message
    assert "redeliver" in message
    assert "twice" in message


@pytest.mark.parametrize(("visibility", "refused"), [(299, True), (300, True), (301, False)])
def test_visibility_timeout_must_exceed_the_default_hard_limit(
    agents: Registry, visibility: int, refused: bool
) -> None:
    settings = settings_for(visibility_timeout=visibility, soft_time_limit=200, time_limit=300)
    config = celery_config(settings, agents)
    if not refused:
        check_config(config, settings, agents)
        return
    with pytest.raises(ConfigError) as caught:
        check_config(config, settings, agents)
    assert "CONVEYOR_VISIBILITY_TIMEOUT" in str(caught.value)
    assert f"{visibility}s" in str(caught.value)


def test_visibility_error_blames_the_setting_when_no_agent_sets_a_limit(agents: Registry) -> None:
    settings = settings_for(visibility_timeout=300, soft_time_limit=200, time_limit=300)
    with pytest.raises(ConfigError) as caught:
        check_config(celery_config(settings, agents), settings, agents)
    assert "CONVEYOR_TIME_LIMIT" in str(caught.value)
    assert "unit.cfg" not in str(caught.value)


def test_visibility_timeout_from_a_celery_override_is_checked(agents: Registry) -> None:
    settings = settings_for()
    short = {"broker_transport_options": {"visibility_timeout": 60}}
    config = celery_config(settings, agents) | short
    with pytest.raises(ConfigError, match="CONVEYOR_VISIBILITY_TIMEOUT"):
        check_config(config, settings, agents)


def test_visibility_check_does_not_apply_to_amqp() -> None:
    @agent(name="unit.cfg.long_amqp", time_limit=4000)
    def long_amqp(x: int) -> int:
        return x

    agents = registry_of(long_amqp)
    settings = settings_for(FAKE_AMQP, visibility_timeout=10)
    config = celery_config(settings, agents)
    check_config(config, settings, agents)
    # The same agent and timeout on Redis are refused, so the amqp pass is not vacuous.
    redis_settings = settings_for(visibility_timeout=10)
    with pytest.raises(ConfigError):
        check_config(celery_config(redis_settings, agents), redis_settings, agents)
