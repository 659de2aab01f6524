"""The worker's consumer: Celery's, publishing task events in batches on a short timer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

EVENT_FLUSH_INTERVAL = 0.05
"""Seconds a buffered task event may wait before it is published (Flower's delay at most)."""


class Consumer(CeleryConsumer):
    """Celery publishes buffered task events on the next loop tick, which under load is one
    broker round trip per event in the worker's main process: the bottleneck of a prefork
    pool. Here they go out together every EVENT_FLUSH_INTERVAL (or when Celery's buffer of
    24 fills), and whatever is buffered is published before shutdown.
    """

    hub: Any
    _flush_events: Callable[[], None]
    _flush_scheduled = False

    def on_send_event_buffered(self) -> None:  # type: ignore[override]
        if self.hub is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            self.hub.call_later(EVENT_FLUSH_INTERVAL, self._flush_buffered_events)

    def _flush_buffered_events(self) -> None:
        self._flush_scheduled = False
        self._flush_events()

    def shutdown(self) -> None:
        self._flush_events()
        super().shutdown()
