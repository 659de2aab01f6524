"""Binding agents to Celery tasks, and executing one run: claim, validate, call, record."""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from celery import Task
from celery.exceptions import Ignore, Retry, TimeLimitExceeded
from celery.signals import task_revoked
from celery.utils.time import get_exponential_backoff_interval
from celery.worker.request import Request

from conveyor.agents import Agent
from conveyor.context import RunContext, _current
from conveyor.errors import InvalidInput
from conveyor.models.deadletters import DeadLetterReason
from conveyor.models.repository import Claim, NewRun, Outcome
from conveyor.models.runs import RunStatus
from conveyor.redaction import mask_secrets
from conveyor.visibility import retry_backoff_max
from conveyor.workers.asyncloop import run_coroutine
from conveyor.workers.deadletters import dead_letter_run
from conveyor.workers.pools import CATCH_ALL_QUEUE

if TYPE_CHECKING:
    from conveyor.app import ConveyorApp

log = logging.getLogger(__name__)
HEADER_ENQUEUED_AT = "conveyor_enqueued_at"
HEADER_IDEMPOTENCY_KEY = "conveyor_idempotency_key"
_HEADERS = (HEADER_ENQUEUED_AT, HEADER_IDEMPOTENCY_KEY)
WORKER_LOST = "WorkerLost"
"""The error type of a run failed because it was delivered more than max_deliveries times."""


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
    """The Celery task class of every agent."""

    Request = "conveyor.workers.execution:AgentRequest"
    agent: Agent
    typing = False
    acks_late = True
    reject_on_worker_lost = True

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """A hard time limit kills the child before it can record; record it from the parent."""
        if isinstance(exc, TimeLimitExceeded):
            run = NewRun(id=task_id, agent=self.agent.name, pool=self.agent.pool)
            cast("ConveyorApp", self.app).recorder.record(
                Outcome(
                    run=run,
                    status=RunStatus.FAILED,
                    error_type="TimeLimitExceeded",
                    error_message=str(exc),
                    finished_at=_now(),
                    attempts=self.request.retries + 1,
                )
            )


def _now() -> datetime:
    return datetime.now(UTC)


def bind_input(spec: Agent, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The JSON payload of a call: kwargs, a chained dict merged in, or positional fields."""
    if len(args) == 1 and isinstance(args[0], dict):
        return {**args[0], **kwargs}
    fields = list(spec.input_model.model_fields)
    if len(args) == 1 and isinstance(args[0], list) and "results" in fields:
        return {"results": args[0], **kwargs}
    if len(args) > len(fields):
        raise InvalidInput(
            spec.name,
            [{"loc": (), "msg": f"takes at most {len(fields)} positional values, got {len(args)}"}],
        )
    return {**dict(zip(fields, args, strict=False)), **kwargs}


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _claim(task: AgentTask, run: NewRun, worker: str) -> Claim | None:
    """Claim the run for this worker: None to go ahead, a finished Claim to return its output.

    Raises Ignore for a run that must not execute: cancelled, failed before, holding an
    idempotency key that belongs to another run, or delivered more than max_deliveries times.
    """
    app = cast("ConveyorApp", task.app)
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    # Only an idempotent agent's first delivery skips the claim; for the others a redelivered
    # message that was never claimed (prefetched, then handed back) did not start, so the
    # claim's own count (a run still `started`) is exact.
    claim = app.recorder.claim(run, worker, redelivered=redelivered and task.agent.idempotent)
    if claim.duplicate_of is not None:
        app.recorder.record(
            Outcome(
                run=run.model_copy(update={"idempotency_key": None}),
                status=RunStatus.CANCELLED,
                worker=worker,
                finished_at=_now(),
                error_type="DuplicateIdempotencyKey",
                error_message=f"idempotency key {run.idempotency_key!r} belongs to run "
                f"{claim.duplicate_of}",
            )
        )
        raise Ignore()
    if claim.claimed:
        if claim.deliveries > app.settings.max_deliveries:
            _give_up_on_lost_workers(task, run, worker, claim.deliveries)
        return None
    log.info("run %s is already %s; not running it again", run.id, claim.status.value)
    if claim.status is RunStatus.SUCCEEDED:
        return claim
    raise Ignore()


def _give_up_on_lost_workers(task: AgentTask, run: NewRun, worker: str, deliveries: int) -> None:
    """A run whose workers keep dying (kill -9, out of memory) is failed and dead-lettered
    instead of being requeued forever by reject_on_worker_lost; its message is acked."""
    app = cast("ConveyorApp", task.app)
    message = (
        f"delivered {deliveries} times, more than max_deliveries "
        f"({app.settings.max_deliveries}; CONVEYOR_MAX_DELIVERIES): its worker was lost "
        "each time (killed, or out of memory)"
    )
    log.error("run %s %s; dead-lettered", run.id, message)
    dead_letter_run(
        task, DeadLetterReason.WORKER_LOST, WORKER_LOST, message, conveyor_headers=_HEADERS
    )
    app.recorder.record(
        Outcome(
            run=run,
            status=RunStatus.FAILED,
            worker=worker,
            attempts=task.request.retries + 1,
            finished_at=_now(),
            error_type=WORKER_LOST,
            error_message=message,
        )
    )
    raise Ignore()


def execute_run(task: AgentTask, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run one agent call with exactly-once effect per run id, recording every state change."""
    app = cast("ConveyorApp", task.app)
    spec, req = task.agent, task.request
    delivery_queue = (req.delivery_info or {}).get("routing_key")
    own_queue = app.agent_queue(spec)
    if delivery_queue == CATCH_ALL_QUEUE and own_queue != delivery_queue and spec.pool != "default":
        task.apply_async(
            args,
            kwargs,
            task_id=req.id,
            queue=own_queue,
            headers={k: str(v) for k in _HEADERS if (v := getattr(req, k, None))},
        )
        raise Ignore()
    worker = req.hostname or "unknown"
    try:
        payload = bind_input(spec, args, kwargs)
        invalid: InvalidInput | None = None
    except InvalidInput as exc:
        payload, invalid = {"args": list(args), "kwargs": kwargs}, exc
    run = NewRun(
        id=req.id,
        agent=spec.name,
        pool=spec.pool,
        queue=delivery_queue,
        input=spec.recorded_input(payload),
        idempotency_key=getattr(req, HEADER_IDEMPOTENCY_KEY, None) or None,
        parent_id=req.parent_id,
        root_id=req.root_id if req.root_id != req.id else None,
        enqueued_at=_parse_time(getattr(req, HEADER_ENQUEUED_AT, None)),
    )
    if not spec.idempotent or (req.delivery_info or {}).get("redelivered"):
        claim = _claim(task, run, worker)
        if claim is not None:
            return claim.output
    started, attempt = _now(), req.retries + 1
    context = RunContext(
        app=app,
        id=run.id,
        agent=spec.name,
        pool=spec.pool,
        worker=worker,
        attempt=attempt,
        root_id=req.root_id,
        parent_id=req.parent_id,
    )

    def record(status: RunStatus, output: Any = None, exc: BaseException | None = None) -> None:
        app.recorder.record(
            Outcome(
                run=run,
                status=status,
                output=output,
                worker=worker,
                attempts=attempt,
                started_at=started,
                finished_at=None if status is RunStatus.RETRYING else _now(),
                error_type=type(exc).__name__ if exc else None,
                error_message=str(exc) if exc else None,
                error_traceback="".join(traceback.format_exception(exc)) if exc else None,
            )
        )
        if status.is_final:
            _run_callbacks(context)

    try:
        if invalid is not None:
            raise invalid
        model = spec.validate_input(payload, app.validation_context)
    except InvalidInput as exc:
        record(RunStatus.REJECTED, exc=exc)
        raise
    token = _current.set(context)
    try:
        result = spec.invoke(model)
        if spec.is_async:
            result = run_coroutine(result)
        output = spec.dump_output(result)
    except Retry:
        raise
    except InvalidInput as exc:
        record(RunStatus.REJECTED, exc=exc)
        raise
    except spec.retry_on as exc:
        if req.retries >= spec.retries:
            dead_letter_run(
                task,
                DeadLetterReason.RETRIES_EXHAUSTED,
                type(exc).__name__,
                f"{exc} (after {attempt} attempt(s); retries={spec.retries})",
                conveyor_headers=_HEADERS,
            )
            record(RunStatus.FAILED, exc=exc)
            raise
        countdown = get_exponential_backoff_interval(
            factor=spec.retry_backoff,
            retries=req.retries,
            maximum=retry_backoff_max(app, spec),
            full_jitter=True,
        )
        record(RunStatus.RETRYING, exc=exc)
        raise task.retry(exc=exc, countdown=countdown, max_retries=spec.retries) from exc
    except BaseException as exc:
        record(RunStatus.FAILED, exc=exc)
        raise
    finally:
        _current.reset(token)
    record(RunStatus.SUCCEEDED, output=output)
    return output


def _run_callbacks(context: RunContext) -> None:
    for callback in context.on_finished:
        try:
            callback()
        except Exception:
            log.warning("an on_finished callback of run %s failed", context.id, exc_info=True)


def bind_agent(app: ConveyorApp, spec: Agent) -> None:
    """Register an agent as a Celery task named by the agent, routed to its pool's queue."""

    def run(self: AgentTask, *args: Any, **kwargs: Any) -> Any:
        return execute_run(self, args, kwargs)

    soft, hard = spec.limits(app.settings.soft_time_limit, app.settings.time_limit)
    options: dict[str, Any] = {
        "name": spec.name,
        "base": AgentTask,
        "bind": True,
        "agent": spec,
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


@task_revoked.connect
def _record_revoked(request: Any = None, sender: Any = None, **_: Any) -> None:
    """A revoked run is recorded as cancelled, from the worker's main process."""
    task = sender if isinstance(sender, AgentTask) else getattr(request, "task", None)
    if not isinstance(task, AgentTask) or request is None:
        return
    run = NewRun(id=request.id, agent=task.agent.name, pool=task.agent.pool)
    try:
        cast("ConveyorApp", task.app).recorder.record(
            Outcome(
                run=run,
                status=RunStatus.CANCELLED,
                attempts=0,
                finished_at=_now(),
                worker=request.hostname,
            )
        )
    except Exception as exc:
        log.warning("could not record the cancellation of %s: %s", request.id, exc)
