"""broker_priority: conveyor's 0..9 (9 most urgent) on each broker's own scale."""

from __future__ import annotations

import pytest

from conveyor.agents import Registry
from conveyor.app import ConveyorApp
from conveyor.config import load_settings
from tests.unit.support import FAKE_AMQP, FAKE_BROKER, FAKE_DATABASE

REDIS_URLS = [FAKE_BROKER, "rediss://127.0.0.1:1/0", "redis+socket:///tmp/unit-redis.sock"]
AMQP_URLS = [FAKE_AMQP, "pyamqp://guest@127.0.0.1:1//"]


def app_on(broker: str) -> ConveyorApp:
    settings = load_settings(broker_url=broker, database_url=FAKE_DATABASE)
    app = ConveyorApp(settings, Registry(), set_as_current=False)
    app.config_from_object({"broker_url": broker})
    return app


@pytest.mark.parametrize("broker", REDIS_URLS)
def test_redis_is_inverted(broker: str) -> None:
    app = app_on(broker)
    assert app.uses_redis is True
    assert app.broker_priority(9) == 0
    assert app.broker_priority(0) == 9
    assert [app.broker_priority(p) for p in range(10)] == list(range(9, -1, -1))


@pytest.mark.parametrize("broker", AMQP_URLS)
def test_amqp_is_unchanged(broker: str) -> None:
    app = app_on(broker)
    assert app.uses_redis is False
    assert app.broker_priority(9) == 9
    assert [app.broker_priority(p) for p in range(10)] == list(range(10))


@pytest.mark.parametrize("broker", [FAKE_BROKER, FAKE_AMQP])
@pytest.mark.parametrize("priority", [-1, 10, 255])
def test_out_of_range_raises(broker: str, priority: int) -> None:
    with pytest.raises(ValueError, match=str(priority)):
        app_on(broker).broker_priority(priority)
