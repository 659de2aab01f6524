"""A Client on an unmigrated database: one line naming the database and the fix, from every
entry point that reads or writes agent_runs, and nothing published to the broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from sqlalchemy import make_url

from conveyor import Client, NotMigrated
from tests.integration.conftest import make_app, service_env
from tests.support.services import scratch_database


def test_client_names_the_database_and_the_fix_and_publishes_nothing(
    pg_admin: str, redis_url: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    broker = redis.Redis.from_url(redis_url.replace("redis+socket://", "unix://"))
    with scratch_database(pg_admin, "conveyor_unmigrated") as empty:
        app = make_app(service_env(redis_url, empty, prefix))
        calls: dict[str, Callable[[Client], Any]] = {
            "submit": lambda c: c.submit("conveyor.ping", {"x": 1}),
            "submit with a key": lambda c: c.submit("conveyor.ping", idempotency_key="k"),
            "get": lambda c: c.get(str(uuid.uuid4())),
            "find": lambda c: c.find(agent="conveyor.ping"),
            "wait": lambda c: c.wait(str(uuid.uuid4()), timeout=5),
            "cancel": lambda c: c.cancel(str(uuid.uuid4())),
        }
        try:
            with Client(app) as client:
                for name, call in calls.items():
                    with pytest.raises(NotMigrated) as caught:
                        call(client)
                    message = str(caught.value)
                    assert message.splitlines() == [message], name
                    assert make_url(empty).database in message, name
                    assert "is at revision none (empty)" in message, name
                    assert message.endswith("run `conveyor db upgrade`"), name
            assert list(broker.scan_iter(f"{prefix}*")) == []
        finally:
            app.runs.engine.dispose()
            broker.close()
