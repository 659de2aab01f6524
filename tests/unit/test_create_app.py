"""create_app on unreachable URLs: no I/O, agents bound as tasks, celeryconfig overrides checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from conveyor.agents import agent, registry
from conveyor.app import ConveyorApp
from conveyor.errors import ConfigError
from conveyor.workers.task import AgentTask
from tests.unit.support import FAKE_AMQP, FAKE_BROKER, build_app


def routed_queue(app: ConveyorApp, name: str) -> str:
    return str(app.amqp.router.route({}, name)["queue"].name)


def test_builds_without_io(fake_app: ConveyorApp, tmp_path: Path) -> None:
    assert isinstance(fake_app, ConveyorApp)
    assert fake_app.embedded is False
    assert fake_app.settings.broker_url == FAKE_BROKER
    assert fake_app.settings.database_url == "postgresql+psycopg://u@127.0.0.1:1/x"
    assert fake_app.conf.broker_url == FAKE_BROKER
    assert fake_app.conf.result_backend == FAKE_BROKER  # unset backend follows a Redis broker
    assert fake_app.agents is registry
    assert not (tmp_path / "data").exists()  # no embedded services were started


def test_ping_is_a_task_routed_to_the_default_queue(fake_app: ConveyorApp) -> None:
    assert "conveyor.ping" in fake_app.tasks
    task = fake_app.tasks["conveyor.ping"]
    assert isinstance(task, AgentTask)
    assert task.agent is registry.get("conveyor.ping")
    assert fake_app.conf.task_routes["conveyor.ping"] == {"queue": "default"}
    assert routed_queue(fake_app, "conveyor.ping") == "default"


def test_agents_are_bound_with_their_limits_and_routed_by_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    @agent(name="unit.app.recall", pool="memory", retries=1, soft_time_limit=5, time_limit=10)
    def recall(key: str) -> str:
        return key

    app = build_app(tmp_path, monkeypatch, queue_prefix="unit-app.")
    task = app.tasks["unit.app.recall"]
    assert task.agent is recall
    assert (task.soft_time_limit, task.time_limit, task.max_retries) == (5, 10, 1)
    assert routed_queue(app, "unit.app.recall") == "unit-app.memory"
    assert app.agent_queue(recall) == "unit-app.memory"


def test_amqp_broker_gets_the_rpc_result_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    app = build_app(tmp_path, monkeypatch, broker_url=FAKE_AMQP)
    assert app.conf.result_backend == "rpc://"
    assert app.uses_redis is False


def test_celeryconfig_module_overrides_a_celery_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    app = build_app(tmp_path, monkeypatch, celeryconfig="result_expires = 123\n")
    assert app.conf.result_expires == 123
    assert app.conf.task_serializer == "json"  # what it does not set is conveyor's


def test_celeryconfig_without_overrides_keeps_conveyors_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """Only lowercase, non-callable, non-module names count as settings."""
    source = (
        "import os\n"
        "RESULT_EXPIRES = 5\n"
        "_result_expires = 6\n\n\n"
        "def result_expires():\n"
        "    return 7\n"
    )
    app = build_app(tmp_path, monkeypatch, celeryconfig=source)
    assert app.conf.result_expires == 86400


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ('accept_content = ["json", "pickle"]\n', "accept_content"),
        ('task_serializer = "pickle"\n', "task_serializer"),
        ('broker_transport_options = {"visibility_timeout": 60}\n', "CONVEYOR_VISIBILITY_TIMEOUT"),
    ],
)
def test_celeryconfig_that_loses_work_or_accepts_pickle_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None, source: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_app(tmp_path, monkeypatch, celeryconfig=source)
    assert fragment in str(caught.value)


def test_agent_in_an_unknown_pool_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    @agent(name="unit.app.gpu_job", pool="gpu")
    def gpu_job(x: int) -> int:
        return x

    with pytest.raises(ConfigError) as caught:
        build_app(tmp_path, monkeypatch)
    message = str(caught.value)
    assert "unit.app.gpu_job" in message
    assert "'gpu'" in message
    assert "analytics, default, io, memory, vector" in message


def test_a_user_pool_makes_the_agent_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    @agent(name="unit.app.gpu_ok", pool="gpu")
    def gpu_ok(x: int) -> int:
        return x

    app = build_app(tmp_path, monkeypatch, pools={"gpu": {"concurrency": 1}})
    assert routed_queue(app, "unit.app.gpu_ok") == "gpu"


def test_agents_do_not_leak_into_other_celery_apps(fake_app: ConveyorApp) -> None:
    assert "conveyor.ping" in fake_app.tasks
    other = Celery("unit-other", set_as_current=False)
    assert "conveyor.ping" not in other.tasks


@pytest.mark.parametrize(
    "limits", [{"time_limit": 100}, {"soft_time_limit": 400}], ids=["hard-only", "soft-only"]
)
def test_an_agent_never_gets_a_soft_limit_at_or_above_its_hard_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None, limits: dict[str, Any]
) -> None:
    name = f"unit.app.limits_{'_'.join(limits)}"

    def work(x: int) -> int:
        return x

    try:
        agent(name=name, **limits)(work)
        app = build_app(tmp_path, monkeypatch)  # defaults: soft 240, hard 300
    except ConfigError as exc:  # refusing the agent up front is a fix too
        assert name in str(exc)
        return
    task = app.tasks[name]
    assert task.soft_time_limit < task.time_limit
