"""The worker's consumer: Celery's, publishing task events in batches on a short timer, and
dead-lettering poison messages through Celery's own hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from celery.bootsteps import StartStopStep
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.exceptions import ContentDisallowed
from vine import promise

from conveyor.celery_app import ConveyorApp
from conveyor.dlq.entry import NewDeadLetter
from conveyor.dlq.poison import Verdict, screen
from conveyor.dlq.table import DeadLetterReason

EVENT_FLUSH_INTERVAL = 0.05
"""Seconds a buffered task event may wait before it is published (Flower's delay at most)."""
EVENT_BUFFER_LIMIT = 1000
"""Buffered task events that are published at once, before their interval is up. Celery's
24 made a worker taking in two thousand runs a second publish four batches for each of
them, from whichever thread sent the event: a fifth of its CPU."""
log = logging.getLogger(__name__)


class EventBuffer(StartStopStep):
    """Makes the task event dispatcher Celery's Events step starts (again on every
    reconnection) buffer up to EVENT_BUFFER_LIMIT events."""

    requires = ("celery.worker.consumer.events:Events",)

    def start(self, c: Any) -> None:
        if c.event_dispatcher is not None:
            c.event_dispatcher.buffer_limit = EVENT_BUFFER_LIMIT


class Consumer(CeleryConsumer):
    """Celery publishes buffered task events on the next loop tick, which under load is one
    broker round trip per event in the worker's main process: the bottleneck of a prefork
    pool. Here they go out together every EVENT_FLUSH_INTERVAL (or when EVENT_BUFFER_LIMIT
    are buffered), and whatever is buffered is published before shutdown.

    A message that must not run (see conveyor.dlq.poison, and Celery's decode, unknown and
    invalid task hooks) is written to its pool's dead-letter queue and rejected without
    requeue: the worker stays up and the message is never delivered again.
    """

    class Blueprint(CeleryConsumer.Blueprint):  # type: ignore[misc,valid-type]
        """Celery's steps, with the guarded remote control, the legacy key sweep and the
        bigger event buffer."""

        default_steps = [
            "conveyor.workers.control:Control" if step.endswith(":Control") else step
            for step in CeleryConsumer.Blueprint.default_steps
        ] + ["conveyor.workers.legacy_keys:LegacyKeySweep", f"{__name__}:EventBuffer"]

    hub: Any
    event_dispatcher: Any
    _flush_scheduled = False

    def on_send_event_buffered(self) -> None:  # type: ignore[override]
        if self.hub is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            self.hub.call_later(EVENT_FLUSH_INTERVAL, self._flush_buffered_events)

    def _flush_buffered_events(self) -> None:
        self._flush_scheduled = False
        self._publish_buffered_events()

    def _publish_buffered_events(self) -> None:
        if self.event_dispatcher:
            self.event_dispatcher.flush()

    def shutdown(self) -> None:
        self._publish_buffered_events()
        super().shutdown()

    @property
    def conveyor(self) -> ConveyorApp:
        return cast("ConveyorApp", self.app)

    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], Any]:
        handle: Callable[[Any], Any] = super().create_task_handler(promise)
        max_bytes = self.conveyor.settings.max_message_bytes

        def on_task_received(message: Any) -> Any:
            verdict = screen(message, max_bytes)
            if verdict is None:
                return handle(message)
            self._dead_letter(message, verdict)
            return message.reject_log_error(log, cast(Any, self).connection_errors)

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter(message, Verdict(DeadLetterReason.NOT_JSON, f"cannot decode: {exc}"))
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        detail = "not a task message: no 'task' header and no task field in the body"
        self._dead_letter(message, Verdict(DeadLetterReason.MISSING_FIELDS, detail))
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (message.headers or {}).get("task")
        detail = f"no task named {name!r} is registered on this pool's workers"
        self._dead_letter(message, Verdict(DeadLetterReason.UNKNOWN_TASK, detail))
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        reason = (
            DeadLetterReason.NOT_JSON
            if isinstance(exc, ContentDisallowed)
            else DeadLetterReason.MISSING_FIELDS
        )
        self._dead_letter(message, Verdict(reason, f"invalid task message: {exc}"))
        super().on_invalid_task(body, message, exc)

    def _dead_letter(self, message: Any, verdict: Verdict) -> None:
        """Record the message; a failure to record is logged and never stops the worker."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        queue = (message.delivery_info or {}).get("routing_key")
        run_id, task = headers.get("id"), headers.get("task")
        try:
            self.conveyor.dead_letters.add(
                NewDeadLetter.capture(
                    body=message.body,
                    headers=message.headers,
                    properties=message.properties,
                    pool=self._pool_of(queue),
                    queue=queue,
                    run_id=run_id if isinstance(run_id, str) and run_id else None,
                    task=task if isinstance(task, str) and task else None,
                    reason=verdict.reason,
                    detail=verdict.detail,
                    content_type=message.content_type,
                )
            )
        except Exception:
            log.exception("could not dead-letter a %s message", verdict.reason.value)
        log.error("dead-lettered a message from %s (%s): %s", queue, verdict.reason, verdict.detail)

    def _pool_of(self, queue: str | None) -> str:
        settings = self.conveyor.settings
        for name, pool in settings.pools.items():
            if queue in pool.queues(settings.queue_prefix):
                return name
        return self.conveyor.pool_name or "default"
