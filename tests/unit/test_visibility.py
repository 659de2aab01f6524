"""Waits that must fit inside the Redis visibility timeout: countdowns and retry backoffs."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import Client
from conveyor.agents import agent
from conveyor.app import ConveyorApp, celery_config
from conveyor.runs.visibility import countdown_limit, retry_backoff_max
from tests.unit.support import FAKE_AMQP, build_app


@pytest.fixture
def limited() -> None:
    @agent(name="unit.visibility.limited", time_limit=100, retry_backoff_max=5000)
    def limited(text: str) -> str:
        return text


@pytest.mark.usefixtures("limited", "no_network")
def test_a_countdown_longer_than_fits_is_refused_naming_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(tmp_path, monkeypatch, visibility_timeout=1000)
    with pytest.raises(ValueError, match=r"countdown 900s .* at most 899s"):
        Client(app).submit("unit.visibility.limited", {"text": "x"}, countdown=900)
    with pytest.raises(ValueError, match="countdown must be 0 or more"):
        Client(app).submit("unit.visibility.limited", {"text": "x"}, countdown=-1)


@pytest.mark.usefixtures("limited", "no_network")
def test_retry_backoff_is_capped_to_fit_on_redis_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = build_app(tmp_path, monkeypatch, visibility_timeout=1000)
    spec = redis.agents.get("unit.visibility.limited")
    assert countdown_limit(redis, spec) == 1000 - 100 - 1
    assert retry_backoff_max(redis, spec) == 899
    amqp = build_app(tmp_path, monkeypatch, broker_url=FAKE_AMQP)
    assert countdown_limit(amqp, spec) is None
    assert retry_backoff_max(amqp, spec) == 5000


@pytest.mark.parametrize(("visibility", "interval"), [(4, 1), (60, 6), (3600, 10)])
def test_redis_sweeps_for_abandoned_messages_every_tenth_of_the_timeout(
    fake_app: ConveyorApp, visibility: int, interval: int
) -> None:
    settings = fake_app.settings.model_copy(update={"visibility_timeout": visibility})
    options = celery_config(settings, fake_app.agents)["broker_transport_options"]
    assert options["unacked_restore_interval"] == interval
    assert options["unacked_restore_throttle"] == 1
