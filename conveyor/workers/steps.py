"""The steps every agent run goes through, in order (conveyor.workers.pipeline)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, NoReturn

from celery.exceptions import Ignore
from celery.utils.time import get_exponential_backoff_interval

from conveyor.agents import AnyAgent
from conveyor.context import RunContext, _current
from conveyor.dlq.table import DeadLetterReason
from conveyor.errors import InvalidInput
from conveyor.pools import CATCH_ALL_QUEUE
from conveyor.runs.headers import CONVEYOR_HEADERS, HEADER_ENQUEUED_AT, HEADER_IDEMPOTENCY_KEY
from conveyor.runs.records import Claim, NewRun
from conveyor.runs.status import RunStatus
from conveyor.runs.visibility import retry_backoff_max
from conveyor.workers.deadletters import dead_letter_run
from conveyor.workers.pipeline import Ending, Finish, RunState, Step, now, outcome

log = logging.getLogger(__name__)
WORKER_LOST = "WorkerLost"
"""The error type of a run failed because it was delivered more than max_deliveries times."""


def bind_input(spec: AnyAgent, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
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


class RerouteStep(Step):
    """A run that reached the catch-all queue (a plain client that knows no routes) moves to
    its own pool's queue, under the same id."""

    name = "reroute"
    blocking = True

    def before(self, state: RunState) -> None:
        req, spec = state.request, state.spec
        here = (req.delivery_info or {}).get("routing_key")
        own = state.app.agent_queue(spec)
        if here == CATCH_ALL_QUEUE and own != here and spec.pool != "default":
            state.task.apply_async(
                state.args,
                state.kwargs,
                task_id=req.id,
                queue=own,
                headers={k: str(v) for k in CONVEYOR_HEADERS if (v := getattr(req, k, None))},
            )
            raise Ignore()


class BindStep(Step):
    """The payload from Celery's args and kwargs, and the run as it will be recorded."""

    name = "bind"

    def before(self, state: RunState) -> None:
        req, spec = state.request, state.spec
        state.worker = req.hostname or "unknown"
        try:
            state.payload = bind_input(spec, state.args, state.kwargs)
        except InvalidInput as exc:
            state.payload, state.invalid = {"args": list(state.args), "kwargs": state.kwargs}, exc
        state.run = NewRun(
            id=req.id,
            agent=spec.name,
            pool=spec.pool,
            queue=(req.delivery_info or {}).get("routing_key"),
            input=spec.recorded_input(state.payload),
            idempotency_key=getattr(req, HEADER_IDEMPOTENCY_KEY, None) or None,
            parent_id=req.parent_id,
            root_id=req.root_id if req.root_id != req.id else None,
            enqueued_at=_parse_time(getattr(req, HEADER_ENQUEUED_AT, None)),
        )


def claim_run(task: Any, run: NewRun, worker: str, request: Any = None) -> Claim | None:
    """Claim the run for this worker: None to go ahead, a finished Claim to return its output.

    Raises Ignore for a run that must not execute: cancelled, failed before, holding an
    idempotency key that belongs to another run, or delivered more than max_deliveries times.
    """
    app, request = task.app, request or task.request
    redelivered = bool((request.delivery_info or {}).get("redelivered"))
    # Only an idempotent agent's first delivery skips the claim; for the others a redelivered
    # message that was never claimed (prefetched, then handed back) did not start, so the
    # claim's own count (a run still `started`) is exact.
    claim: Claim = app.recorder.claim(
        run, worker, redelivered=redelivered and task.agent.idempotent
    )
    if claim.duplicate_of is not None:
        message = f"idempotency key {run.idempotency_key!r} belongs to run {claim.duplicate_of}"
        ending = Ending(
            RunStatus.CANCELLED, error_type="DuplicateIdempotencyKey", error_message=message
        )
        unkeyed = run.model_copy(update={"idempotency_key": None})
        app.recorder.record(outcome(unkeyed, ending, worker=worker, attempts=1))
        raise Ignore()
    if claim.claimed:
        if claim.deliveries > app.settings.max_deliveries:
            _give_up_on_lost_workers(task, run, worker, claim.deliveries, request=request)
        return None
    log.info("run %s is already %s; not running it again", run.id, claim.status.value)
    if claim.status is RunStatus.SUCCEEDED:
        return claim
    raise Ignore()


def _give_up_on_lost_workers(
    task: Any, run: NewRun, worker: str, deliveries: int, *, request: Any
) -> None:
    """A run whose workers keep dying (kill -9, out of memory) is failed and dead-lettered
    instead of being requeued forever by reject_on_worker_lost; its message is acked."""
    app = task.app
    message = (
        f"delivered {deliveries} times, more than max_deliveries "
        f"({app.settings.max_deliveries}; CONVEYOR_MAX_DELIVERIES): its worker was lost "
        "each time (killed, or out of memory)"
    )
    log.error("run %s %s; dead-lettered", run.id, message)
    dead_letter_run(
        task,
        task.agent.pool,
        DeadLetterReason.WORKER_LOST,
        WORKER_LOST,
        message,
        conveyor_headers=CONVEYOR_HEADERS,
        request=request,
    )
    ending = Ending(RunStatus.FAILED, error_type=WORKER_LOST, error_message=message)
    attempts = request.retries + 1
    app.recorder.record(outcome(run, ending, worker=worker, attempts=attempts))
    raise Ignore()


class ClaimStep(Step):
    """Exactly-once effect per run id: the worker claims the run in PostgreSQL before it runs
    (an idempotent agent's first delivery skips this round trip)."""

    name = "claim"
    blocking = True

    def before(self, state: RunState) -> None:
        assert state.run is not None
        redelivered = (state.request.delivery_info or {}).get("redelivered")
        if state.spec.idempotent and not redelivered:
            return
        claim = claim_run(state.task, state.run, state.worker, state.request)
        if claim is not None:
            raise Finish(claim.output)


class RecordStep(Step):
    """Every state change of the run goes to agent_runs (a retry, a final state); a final one
    then calls the run's on_finished callbacks."""

    name = "record"
    blocking = True

    def before(self, state: RunState) -> None:
        state.started, state.attempt = now(), state.request.retries + 1

    def after(self, state: RunState, ending: Ending) -> Ending:
        if ending.status is None:
            return ending
        state.app.recorder.record(state.outcome(ending))
        if ending.status.is_final and state.context is not None:
            _run_callbacks(state.context)
        return ending


def _run_callbacks(context: RunContext) -> None:
    for callback in context.on_finished:
        try:
            callback()
        except Exception:
            log.warning("an on_finished callback of run %s failed", context.id, exc_info=True)


class ContextStep(Step):
    """`current_run()` inside the agent: set for the call, reset after it."""

    name = "context"

    def before(self, state: RunState) -> None:
        req = state.request
        state.context = RunContext(
            id=req.id,
            agent=state.spec.name,
            pool=state.spec.pool,
            worker=state.worker,
            attempt=state.attempt,
            root_id=req.root_id,
            parent_id=req.parent_id,
            settings=state.app.settings,
        )
        state.extras["context_token"] = _current.set(state.context)

    def after(self, state: RunState, ending: Ending) -> Ending:
        _current.reset(state.extras.pop("context_token"))
        return ending


class ValidateStep(Step):
    """The payload against the agent's input model; a bad one is rejected, never retried."""

    name = "validate"

    def before(self, state: RunState) -> None:
        if state.invalid is not None:
            raise state.invalid
        state.model = state.spec.validate_input(state.payload, state.app.validation_context)


class RetryStep(Step):
    """A transient error (the agent's retry_on) is retried with backoff and jitter, bounded by
    the visibility timeout; once retries run out the run is dead-lettered and fails."""

    name = "retry"
    blocking = True

    def after(self, state: RunState, ending: Ending) -> Ending:
        spec, req, error = state.spec, state.request, ending.error
        if ending.status is not RunStatus.FAILED or not isinstance(error, spec.retry_on):
            return ending
        if req.retries >= spec.retries:
            dead_letter_run(
                state.task,
                spec.pool,
                DeadLetterReason.RETRIES_EXHAUSTED,
                type(error).__name__,
                f"{error} (after {state.attempt} attempt(s); retries={spec.retries})",
                conveyor_headers=CONVEYOR_HEADERS,
                request=req,
            )
            return ending
        countdown = get_exponential_backoff_interval(
            factor=spec.retry_backoff,
            retries=req.retries,
            maximum=retry_backoff_max(state.app, spec),
            full_jitter=True,
        )

        def retry() -> NoReturn:
            raise state.task.retry(exc=error, countdown=countdown, max_retries=spec.retries)

        return Ending(RunStatus.RETRYING, error=error, then=retry)


def default_steps() -> list[Step]:
    """The pipeline of every agent run. Order matters: `before` hooks run in this order,
    `after` hooks in reverse, so `record` sees the ending `retry` decided."""
    return [
        RerouteStep(),
        BindStep(),
        ClaimStep(),
        RecordStep(),
        ContextStep(),
        ValidateStep(),
        RetryStep(),
    ]
