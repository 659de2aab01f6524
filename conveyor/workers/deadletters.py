"""Dead-lettering a run from inside its task: retries exhausted, or too many deliveries."""

from __future__ import annotations

import json
from typing import Any, cast

from celery import Task

from conveyor.celery_app import ConveyorApp
from conveyor.dlq.entry import NewDeadLetter, error_entry
from conveyor.dlq.table import DeadLetterReason


def dead_letter_run(
    task: Task[Any, Any],
    pool: str,
    reason: DeadLetterReason,
    error_type: str,
    message: str,
    *,
    conveyor_headers: tuple[str, ...],
    request: Any = None,
) -> None:
    """Write the run's task message, rebuilt from its request as Celery's own retry does,
    to its pool's dead-letter queue, with the run's error history and this last error."""
    app = cast(ConveyorApp, task.app)
    req = request or task.request
    delivery = req.delivery_info or {}
    headers: dict[str, Any] = {
        "id": req.id,
        "task": task.name,
        "retries": req.retries,
        "root_id": req.root_id,
        "parent_id": req.parent_id,
        "group": req.group,
        "timelimit": req.timelimit,
    }
    headers.update({k: v for k in conveyor_headers if (v := getattr(req, k, None))})
    embed = {
        "callbacks": req.callbacks,
        "errbacks": req.errbacks,
        "chain": req.chain,
        "chord": req.chord,
    }
    body = json.dumps([list(req.args or ()), dict(req.kwargs or {}), embed])
    app.recorder.dead_letter(
        app.dead_letters,
        NewDeadLetter.capture(
            body=body,
            headers=headers,
            properties={"priority": delivery.get("priority")},
            pool=pool,
            queue=delivery.get("routing_key"),
            run_id=req.id,
            task=task.name,
            reason=reason,
            detail=f"{error_type}: {message}",
            content_type="application/json",
            errors=[error_entry(req.retries + 1, error_type, message, req.hostname)],
        ),
    )
