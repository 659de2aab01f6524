"""kombu's Redis key scheme as conveyor shares it with plain Celery, and the legacy one."""

from __future__ import annotations

import logging

import pytest
from kombu.transport.redis import Channel

from conveyor.agents import Registry
from conveyor.app import QUEUE_MAX_PRIORITY, celery_config
from conveyor.broker.amqp_queues import QueueArgumentsMismatch
from conveyor.broker.once import MAX_REMEMBERED, WarnOnce
from conveyor.broker.redis_keys import (
    LEGACY_SEP,
    PRIORITY_STEPS,
    legacy_list_pairs,
    rewrite_binding,
    split_binding,
)
from conveyor.config import load_settings
from tests.unit.support import FAKE_AMQP, FAKE_BROKER, FAKE_DATABASE

SEP = Channel.sep


def test_the_separator_is_kombus_default_and_the_steps_a_superset_of_its_own() -> None:
    options = celery_config(
        load_settings(broker_url=FAKE_BROKER, database_url=FAKE_DATABASE), Registry()
    )["broker_transport_options"]
    assert "sep" not in options, "a plain client's lists are named with kombu's default sep"
    assert set(Channel.priority_steps) <= set(options["priority_steps"]) == set(range(10))
    assert options["priority_steps"] == PRIORITY_STEPS


@pytest.mark.parametrize("broker", [FAKE_BROKER, FAKE_AMQP])
def test_every_queue_is_declared_with_the_max_priority_plain_clients_are_told_to_use(
    broker: str,
) -> None:
    config = celery_config(load_settings(broker_url=broker, database_url=FAKE_DATABASE), Registry())
    declared = {q.name: q.max_priority for q in config["task_queues"]}
    assert declared == dict.fromkeys(
        ["default", "memory", "vector", "analytics", "io", "celery"], QUEUE_MAX_PRIORITY
    )
    assert QUEUE_MAX_PRIORITY == 10


@pytest.mark.parametrize(
    ("member", "parsed"),
    [
        (f"rk{SEP}{SEP}queue", ("rk", "", "queue")),
        (f"a:b{SEP}p{SEP}q", ("a:b", "p", "q")),
        ("rk::queue", ("rk", "", "queue")),
        ("no separators at all", None),
        ("a:b", None),
        ("a:b:c:d", None),
        (f"a{SEP}b", None),
    ],
)
def test_split_binding_reads_both_schemes_and_refuses_the_rest(
    member: str, parsed: tuple[str, str, str] | None
) -> None:
    assert split_binding(member, SEP) == parsed


def test_only_legacy_entries_are_rewritten() -> None:
    assert rewrite_binding("rk::queue", SEP) == f"rk{SEP}{SEP}queue"
    assert rewrite_binding(f"rk{SEP}{SEP}queue", SEP) is None
    assert rewrite_binding("garbage", SEP) is None


def test_legacy_lists_pair_with_their_current_names_above_priority_0() -> None:
    pairs = legacy_list_pairs(["memory", "celery", "memory"], SEP, range(10), prefix="gk:")
    assert len(pairs) == 2 * 9
    assert pairs[0] == (f"gk:celery{LEGACY_SEP}1", f"gk:celery{SEP}1")
    assert ("gk:memory:9", f"gk:memory{SEP}9") in pairs
    assert all(not old.endswith(":0") for old, _ in pairs)


def test_a_mismatch_names_the_queue_and_the_argument() -> None:
    reply = (
        "Queue.declare: (406) PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for "
        "queue 'celery' in vhost '/': received the value '10' of type 'signedint' but "
        "current is none"
    )
    error = QueueArgumentsMismatch("celery", reply)
    assert (error.queue, error.argument) == ("celery", "x-max-priority")
    assert str(error).startswith("RabbitMQ queue 'celery' exists with other arguments")
    assert "inequivalent arg 'x-max-priority'" in str(error)
    assert "conveyor broker migrate" in str(error)
    assert "(406)" not in str(error)


def test_warn_once_logs_each_cause_once_and_remembers_a_bounded_number(
    caplog: pytest.LogCaptureFixture,
) -> None:
    warn = WarnOnce(logging.getLogger("unit.once"))
    with caplog.at_level(logging.WARNING, "unit.once"):
        assert [warn("a", "cause %s", "a") for _ in range(3)] == [True, False, False]
        assert warn("b", "cause %s", "b") is True
    assert [r.getMessage() for r in caplog.records] == ["cause a", "cause b"]
    for key in range(MAX_REMEMBERED):
        warn(key, "flood")
    assert warn("late", "never logged") is False
