"""Task messages published straight through kombu, the way a foreign or hostile producer
would: any body bytes, any content type, Celery's protocol-2 headers."""

from __future__ import annotations

import uuid
from typing import Any

from kombu import Producer

from conveyor.app import ConveyorApp


def task_message(app: ConveyorApp, name: str, **kwargs: Any) -> tuple[str, dict[str, Any], Any]:
    """A run id, the protocol-2 headers and the (args, kwargs, embed) body of a call."""
    run_id = str(uuid.uuid4())
    message = app.amqp.as_task_v2(run_id, name, args=(), kwargs=kwargs)
    return run_id, dict(message.headers), message.body


def publish_raw(
    app: ConveyorApp,
    body: bytes,
    headers: dict[str, Any],
    content_type: str,
    *,
    pool: str = "default",
    content_encoding: str = "utf-8",
) -> None:
    """Put `body` as is on the pool's queue: kombu serializes nothing and signs nothing."""
    queue = app.amqp.queues[app.settings.pool(pool).queue(app.settings.queue_prefix)]
    with app.connection_for_write() as conn:
        Producer(conn).publish(
            body,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
            headers=headers,
            content_type=content_type,
            content_encoding=content_encoding,
        )
