"""Task events reach an event receiver (what Flower runs) from a real worker."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from conveyor import Client

EXPECTED = {"task-received", "task-started", "task-succeeded"}


def test_a_run_sends_received_started_and_succeeded_events(client: Client) -> None:
    seen: dict[str, set[str]] = {}

    def on_event(event: dict[str, Any]) -> None:
        if "uuid" in event:
            seen.setdefault(event["uuid"], set()).add(event["type"])

    with client.app.connection_for_read() as conn:
        receiver = client.app.events.Receiver(conn, handlers={"*": on_event})
        with receiver.consumer_context(wakeup=False) as (conn, _, _):
            _drain(conn, 0.2)  # subscribes before anything is sent
            run_id = client.submit("conveyor.ping", {"events": True})
            client.wait(run_id, timeout=30)
            deadline = time.monotonic() + 10
            while seen.get(run_id, set()) < EXPECTED and time.monotonic() < deadline:
                _drain(conn, 0.5)
    assert seen.get(run_id, set()) >= EXPECTED


def _drain(conn: Any, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        conn.drain_events(timeout=timeout)
