"""Beat and retention without services: settings, the merged schedule, the leader-aware tick."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.analytics.retention import RetentionPolicy, RetentionRequest
from conveyor.analytics.settings import AnalyticsSettings
from conveyor.app import ConveyorApp
from conveyor.beat.leader import entry_row, leader_name, lock_key
from conveyor.beat.schedule import DEFAULT_SCHEDULE, beat_schedule
from conveyor.beat.scheduler import LeaderScheduler
from conveyor.config import load_section, load_settings
from conveyor.errors import ConfigError
from conveyor.metrics import beat as beat_metrics
from conveyor.metrics.beat import BeatCollector
from tests.unit.support import build_app


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
        load_section(AnalyticsSettings)
    return str(caught.value)


# -- settings --------------------------------------------------------------------------------


def test_beat_and_retention_defaults() -> None:
    settings, analytics = load_settings(), load_section(AnalyticsSettings)
    assert settings.beat_schedule == {}
    assert settings.beat_lock_retry_seconds == 1.0
    assert (analytics.retention_days, analytics.retention_failed_days) == (30, 90)
    assert analytics.retention_batch == 5000


def test_the_schedule_setting_is_json_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CONVEYOR_BEAT_SCHEDULE", '{"memory.sweep": 120, "vector.maintain": 0, "x": null}'
    )
    assert load_settings().beat_schedule == {"memory.sweep": 120, "vector.maintain": 0, "x": None}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[60]", "must be a JSON object of agent name -> seconds"),
        ('{"memory.sweep": -1}', "entry 'memory.sweep': -1 is not seconds"),
        ('{"memory.sweep": "60"}', "entry 'memory.sweep': '60' is not seconds"),
        ('{"memory.sweep": true}', "entry 'memory.sweep': True is not seconds"),
        ('{"memory.sweep": Infinity}', "entry 'memory.sweep': inf is not seconds"),
        ('{"": 5}', "the name must be an agent name"),
    ],
)
def test_a_bad_schedule_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    error = config_error(monkeypatch, CONVEYOR_BEAT_SCHEDULE=value)
    assert error.startswith("invalid setting CONVEYOR_BEAT_SCHEDULE")
    assert message in error


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONVEYOR_RETENTION_DAYS": "0"}, "CONVEYOR_RETENTION_DAYS"),
        ({"CONVEYOR_RETENTION_FAILED_DAYS": "-3"}, "CONVEYOR_RETENTION_FAILED_DAYS"),
        ({"CONVEYOR_RETENTION_BATCH": "0"}, "CONVEYOR_RETENTION_BATCH"),
        ({"CONVEYOR_BEAT_LOCK_RETRY_SECONDS": "0"}, "CONVEYOR_BEAT_LOCK_RETRY_SECONDS"),
        (
            {"CONVEYOR_RETENTION_DAYS": "60", "CONVEYOR_RETENTION_FAILED_DAYS": "10"},
            "CONVEYOR_RETENTION_FAILED_DAYS (10) must be at least CONVEYOR_RETENTION_DAYS (60)",
        ),
    ],
)
def test_bad_retention_and_lock_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    assert message in config_error(monkeypatch, **env)


def test_failures_may_be_kept_exactly_as_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_RETENTION_DAYS", "7")
    monkeypatch.setenv("CONVEYOR_RETENTION_FAILED_DAYS", "7")
    assert load_section(AnalyticsSettings).retention_failed_days == 7


def test_retention_policy_and_request_bounds() -> None:
    assert RetentionPolicy().model_dump() == {"days": 30, "failed_days": 90, "batch": 5000}
    with pytest.raises(ValidationError, match="failed_days"):
        RetentionPolicy(days=30, failed_days=29)
    assert RetentionRequest().batch_size is None
    for bad in ({"batch_size": 0}, {"max_batches": 0}, {"max_seconds": 0}, {"days": 1}):
        with pytest.raises(ValidationError):
            RetentionRequest.model_validate(bad)


# -- the merged schedule ---------------------------------------------------------------------


def every(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: entry["schedule"] for name, entry in entries.items()}


def test_the_default_schedule(fake_app: ConveyorApp) -> None:
    entries = beat_schedule(fake_app)
    assert every(entries) == {n: timedelta(seconds=s) for n, s in DEFAULT_SCHEDULE.items()}
    assert all(e["task"] == name and e["kwargs"] == {} for name, e in entries.items())
    assert DEFAULT_SCHEDULE == {
        "analytics.rollup": 60,
        "memory.sweep": 300,
        "vector.maintain": 600,
        "analytics.retention": 3600,
    }
    for name in DEFAULT_SCHEDULE:
        fake_app.agents.get(name).input_model.model_validate({})


def test_the_setting_changes_disables_and_adds_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    app = build_app(
        tmp_path,
        monkeypatch,
        beat_schedule='{"memory.sweep": 30, "vector.maintain": 0, "analytics.retention": null, '
        '"conveyor.ping": 5}',
    )
    assert every(beat_schedule(app)) == {
        "analytics.rollup": timedelta(seconds=60),
        "memory.sweep": timedelta(seconds=30),
        "conveyor.ping": timedelta(seconds=5),
    }


def test_an_unknown_agent_in_the_setting_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    app = build_app(tmp_path, monkeypatch, beat_schedule='{"memory.swep": 30}')
    with pytest.raises(ConfigError) as caught:
        beat_schedule(app)
    assert str(caught.value) == (
        "invalid setting CONVEYOR_BEAT_SCHEDULE: unknown agent 'memory.swep'; "
        "did you mean memory.sweep, memory.search, memory.stats?"
    )


CELERYCONFIG = """
from datetime import timedelta
beat_schedule = {
    "memory.sweep": {"task": "memory.sweep", "schedule": 45, "kwargs": {"batch_size": 10}},
    "vector.maintain": None,
    "nightly-ping": {"task": "conveyor.ping", "schedule": timedelta(hours=24)},
}
"""


def test_celeryconfig_entries_merge_over_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    app = build_app(tmp_path, monkeypatch, CELERYCONFIG, beat_schedule='{"memory.sweep": 30}')
    entries = beat_schedule(app)
    assert every(entries) == {
        "analytics.rollup": timedelta(seconds=60),
        "memory.sweep": 45,
        "analytics.retention": timedelta(seconds=3600),
        "nightly-ping": timedelta(hours=24),
    }
    assert entries["memory.sweep"]["kwargs"] == {"batch_size": 10}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            'beat_schedule = {"x": {"task": "conveyor.pong", "schedule": 5}}',
            "invalid celeryconfig beat_schedule entry 'x': unknown task 'conveyor.pong'; "
            "did you mean conveyor.ping?",
        ),
        (
            'beat_schedule = {"x": {"task": "conveyor.ping"}}',
            "invalid celeryconfig beat_schedule entry 'x': give a dict with 'task' and 'schedule'",
        ),
    ],
)
def test_bad_celeryconfig_entries_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None, config: str, message: str
) -> None:
    app = build_app(tmp_path, monkeypatch, config)
    with pytest.raises(ConfigError) as caught:
        beat_schedule(app)
    assert str(caught.value) == message


# -- the leader-aware scheduler --------------------------------------------------------------


class FakeLock:
    """A LeaderLock whose answers the test sets."""

    def __init__(self, name: str = "beat") -> None:
        self.name, self.holder = name, "host:1"
        self.leading = False
        self.free = True
        self.fence = True
        self.recorded: dict[str, float] = {}
        self.marks: list[str] = []
        self.released = False

    def acquire(self) -> bool:
        self.leading = self.leading or self.free
        return self.leading

    def mark(self, row: str | None = None) -> bool:
        if not (self.leading and self.fence):
            self.leading = False
            return False
        self.marks.append(row or self.name)
        return True

    def ages(self, rows: Sequence[str]) -> dict[str, float]:
        return {row: age for row, age in self.recorded.items() if row in rows}

    def release(self) -> None:
        self.released = True


def scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock: FakeLock
) -> tuple[LeaderScheduler, list[str]]:
    app = build_app(
        tmp_path,
        monkeypatch,
        beat_schedule='{"analytics.rollup": 0, "memory.sweep": 0, "vector.maintain": 0, '
        '"analytics.retention": 0, "conveyor.ping": 10}',
    )
    made = LeaderScheduler(app, lock=lock)  # type: ignore[arg-type]
    made.__dict__["producer"] = None  # never connect to the (fake) broker
    sent: list[str] = []
    monkeypatch.setattr(
        made, "apply_async", lambda entry, producer=None, advance=True, **_: sent.append(entry.name)
    )
    return made, sent


def overdue(made: LeaderScheduler, seconds: float = 60) -> None:
    entry = made.schedule["conveyor.ping"]
    entry.last_run_at = made.app.now() - timedelta(seconds=seconds)
    made._heap = None


def test_a_standby_sends_nothing_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    lock = FakeLock()
    lock.free = False
    made, sent = scheduler(tmp_path, monkeypatch, lock)
    overdue(made)
    assert made.tick() == 1.0
    assert made.max_interval == 1.0
    assert (sent, lock.marks) == ([], [])


def test_the_leader_renews_fences_and_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    lock = FakeLock()
    made, sent = scheduler(tmp_path, monkeypatch, lock)
    lock.recorded[entry_row("beat", "conveyor.ping")] = 60.0  # last sent a minute ago
    assert made.tick() == 0
    assert sent == ["conveyor.ping"]
    assert lock.marks == ["beat", "beat/conveyor.ping"]
    assert made.tick() == 1.0  # the next run is 10 s away: renew again in a second
    assert sent == ["conveyor.ping"]
    assert lock.marks == ["beat", "beat/conveyor.ping", "beat"]


def test_a_new_leader_continues_the_old_cadence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    lock = FakeLock()
    made, sent = scheduler(tmp_path, monkeypatch, lock)
    overdue(made)  # this process has waited long, but another leader sent it 3 s ago
    lock.recorded[entry_row("beat", "conveyor.ping")] = 3.0
    assert made.tick() <= 1.0
    assert sent == []


def test_a_lost_fence_stops_the_dispatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    lock = FakeLock()
    made, sent = scheduler(tmp_path, monkeypatch, lock)
    lock.recorded[entry_row("beat", "conveyor.ping")] = 60.0
    original = lock.mark

    def fence_lost_at_dispatch(row: str | None = None) -> bool:
        lock.fence = row is None  # the renewal passes, the dispatch fence fails
        return original(row)

    monkeypatch.setattr(lock, "mark", fence_lost_at_dispatch)
    made.tick()
    assert sent == [] and not lock.leading
    made.close()
    assert lock.released


# -- names and the exporter gauge ------------------------------------------------------------


def test_lock_names_and_keys() -> None:
    assert leader_name(load_settings(queue_prefix="staging.")) == "staging.beat"
    assert entry_row("staging.beat", "memory.sweep") == "staging.beat/memory.sweep"
    key = lock_key("beat")
    assert key == lock_key("beat") != lock_key("staging.beat")
    assert -(2**63) <= key < 2**63


def test_the_leader_age_gauge_is_absent_without_a_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def unreachable(url: str) -> Any:
        calls.append(url)
        raise OSError("connection refused")

    monkeypatch.setattr(beat_metrics, "engine_for", unreachable)
    collector = BeatCollector(load_settings(database_url="postgresql://u@db/x"), ttl=60)
    families = list(collector.collect()) + list(collector.collect())
    assert [f.name for f in families] == ["conveyor_beat_leader_age_seconds"] * 2
    assert all(f.samples == [] for f in families)
    assert len(calls) == 1  # cached like the queue reading
    assert BeatCollector(load_settings()).age() is None
