"""Publishing a dead letter's task message again, through Celery, with a fresh retry budget."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from celery import Celery

from conveyor.dlq.entry import DeadLetterEntry
from conveyor.runs.headers import HEADER_IDEMPOTENCY_KEY

KEPT_HEADERS = (HEADER_IDEMPOTENCY_KEY,)
"""Conveyor headers a replay carries over; the enqueue time is stamped anew."""


def publisher(app: Celery) -> Callable[[DeadLetterEntry], None]:
    """A function that sends an entry's task (same run id, queue, args, callbacks, priority)."""

    def publish(entry: DeadLetterEntry) -> None:
        args, kwargs, embed = json.loads(entry.body or "null")
        headers: dict[str, Any] = entry.headers
        app.send_task(
            str(entry.task),
            args=args,
            kwargs=kwargs,
            task_id=entry.run_id,
            queue=entry.queue,
            priority=entry.properties.get("priority"),
            link=embed.get("callbacks"),
            link_error=embed.get("errbacks"),
            chain=embed.get("chain"),
            chord=embed.get("chord"),
            root_id=headers.get("root_id"),
            parent_id=headers.get("parent_id"),
            group_id=headers.get("group"),
            headers={k: headers[k] for k in KEPT_HEADERS if headers.get(k)},
        )

    return publish
