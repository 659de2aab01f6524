"""Agents as Celery tasks: the task and request classes, binding an agent to the app, and the
outcomes Celery reports from the worker's main process (a hard time limit, a revoke)."""

from __future__ import annotations

import logging
from typing import Any, cast

from celery import Task
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_revoked
from celery.worker.request import Request

from conveyor.agents import AnyAgent
from conveyor.celery_app import ConveyorApp
from conveyor.redaction import mask_secrets
from conveyor.runs.headers import HEADER_ENQUEUED_AT
from conveyor.runs.records import NewRun
from conveyor.runs.status import RunStatus
from conveyor.workers.pipeline import Ending, Pipeline, RunState, outcome
from conveyor.workers.steps import default_steps

log = logging.getLogger(__name__)


class AgentRequest(Request):
    """A worker's request for an agent run: its task-started event also carries the agent
    name and the enqueue time, so the exporter can measure queue wait from events alone.
    Failure events (Flower shows them) carry their error with passwords masked."""

    def send_event(self, type: str, **fields: Any) -> None:
        if type == "task-started":
            fields.setdefault("name", self.name)
            headers = cast(Any, self).request_dict
            fields.setdefault("enqueued_at", headers.get(HEADER_ENQUEUED_AT))
        for name in ("exception", "traceback"):
            if isinstance(fields.get(name), str):
                fields[name] = mask_secrets(fields[name])
        super().send_event(type, **fields)


class AgentTask(Task[Any, Any]):
    """The Celery task class of every agent: each call runs the agent's pipeline."""

    Request = "conveyor.workers.task:AgentRequest"
    agent: AnyAgent
    pipeline: Pipeline
    typing = False
    acks_late = True
    reject_on_worker_lost = True

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """A hard time limit kills the child before it can record; record it from the parent."""
        if isinstance(exc, TimeLimitExceeded):
            run = NewRun(id=task_id, agent=self.agent.name, pool=self.agent.pool)
            ending = Ending(
                RunStatus.FAILED, error_type="TimeLimitExceeded", error_message=str(exc)
            )
            cast("ConveyorApp", self.app).recorder.record(
                outcome(run, ending, worker=None, attempts=self.request.retries + 1)
            )


def bind_agent(app: ConveyorApp, spec: AnyAgent) -> None:
    """Register an agent as a Celery task named by the agent, routed to its pool's queue."""

    def run(self: AgentTask, *args: Any, **kwargs: Any) -> Any:
        return self.pipeline.execute(RunState(self, self.agent, args, kwargs))

    soft, hard = spec.limits(app.settings.soft_time_limit, app.settings.time_limit)
    options: dict[str, Any] = {
        "name": spec.name,
        "base": AgentTask,
        "bind": True,
        "agent": spec,
        "pipeline": Pipeline(default_steps()),
        "max_retries": spec.retries,
        "soft_time_limit": soft,
        "time_limit": hard,
        "shared": False,
    }
    if spec.rate_limit:
        options["rate_limit"] = spec.rate_limit
    if spec.priority is not None:
        options["priority"] = app.broker_priority(spec.priority)
    run.__name__ = spec.name.rsplit(".", 1)[-1]
    run.__doc__ = spec.fn.__doc__
    app.task(**options)(run)


def connect_task_receivers() -> None:
    """Record revoked runs; connected once by create_app, not at import."""
    task_revoked.connect(_record_revoked, weak=False, dispatch_uid="conveyor.record_revoked")


def _record_revoked(request: Any = None, sender: Any = None, **_: Any) -> None:
    """A revoked run is recorded as cancelled, from the worker's main process."""
    task = sender if isinstance(sender, AgentTask) else getattr(request, "task", None)
    if not isinstance(task, AgentTask) or request is None:
        return
    run = NewRun(id=request.id, agent=task.agent.name, pool=task.agent.pool)
    ending = Ending(RunStatus.CANCELLED)
    try:
        cast("ConveyorApp", task.app).recorder.record(
            outcome(run, ending, worker=request.hostname, attempts=0)
        )
    except Exception as exc:
        log.warning("could not record the cancellation of %s: %s", request.id, exc)
