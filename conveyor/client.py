"""Client: submit runs, wait for them, read their results, cancel them, build workflows."""

from __future__ import annotations

import uuid
from collections.abc import Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ParamSpec, TypeVar, overload

import orjson
from celery import chain, chord, group
from celery.canvas import Signature
from kombu.exceptions import OperationalError as BrokerError

from conveyor.agents import Agent
from conveyor.app import create_app, resolve_services
from conveyor.celery_app import ConveyorApp
from conveyor.config import Settings
from conveyor.errors import InvalidInput, RunFailed, ServiceUnavailable
from conveyor.handle import RunHandle
from conveyor.memory.api import MemoryAPI
from conveyor.runs.headers import HEADER_ENQUEUED_AT, HEADER_IDEMPOTENCY_KEY
from conveyor.runs.records import NewRun, Run
from conveyor.runs.status import RunStatus
from conveyor.runs.visibility import check_countdown
from conveyor.runs.waiter import Progress, Waiter
from conveyor.vector.api import VectorAPI

P = ParamSpec("P")
T = TypeVar("T")


def _isoformat(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


BODY_OVERHEAD = 256
"""Bytes a task body adds around its payload (args, the options Celery embeds)."""


def _check_message_size(agent: str, payload: dict[str, Any], limit: int) -> None:
    """InvalidInput for a payload whose message workers would refuse as too large (they
    dead-letter it without running), instead of publishing it."""
    size = len(orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS))
    if size + BODY_OVERHEAD > limit:
        raise InvalidInput(
            agent,
            [{"loc": (), "msg": f"makes a message of about {size + BODY_OVERHEAD} bytes; workers "
              f"refuse messages over {limit} bytes (CONVEYOR_MAX_MESSAGE_BYTES)"}],
        )  # fmt: skip


class Client:
    """The Python entry point to conveyor.

    `wait()` does not poll: its waiter LISTENs on PostgreSQL, where every final state change
    is committed together with a NOTIFY (conveyor.runs.waiter).
    """

    def __init__(self, app: ConveyorApp | None = None, settings: Settings | None = None) -> None:
        self.app = app or create_app(resolve_services(settings))
        self.runs = self.app.runs
        self.waiter = Waiter(self.runs, str(self.app.settings.database_url))

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @cached_property
    def memory(self) -> MemoryAPI:
        """Prompt memory: remember, recall, search, forget, stats (see conveyor.memory).

        Its `timeout` (seconds per call) can be changed: `client.memory.timeout = 300`.
        """
        return MemoryAPI(self)

    @cached_property
    def vector(self) -> VectorAPI:
        """Vector search: collections, upsert, delete, search (see conveyor.vector).

        Its `timeout` (seconds per call) can be changed: `client.vector.timeout = 600`.
        """
        return VectorAPI(self)

    def close(self) -> None:
        self.waiter.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @overload
    def send(
        self, agent: Agent[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> RunHandle[T]: ...

    @overload
    def send(self, agent: Agent[P, T], /, *args: P.args, **kwargs: P.kwargs) -> RunHandle[T]: ...

    def send(self, agent: Agent[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> RunHandle[Any]:
        """Enqueue one run of `agent` with these arguments, checked against its signature;
        the handle's `result()` is typed by the agent's return annotation."""
        return self.send_payload(agent, agent.payload(*args, **kwargs))

    def send_payload(
        self, agent: Agent[Any, T], payload: dict[str, Any], *, celery_result: bool = True
    ) -> RunHandle[T]:
        """Enqueue one run of `agent` with a JSON payload; a typed handle to it."""
        run_id = self.submit(agent.name, payload, celery_result=celery_result)
        return self.handle(agent, run_id)

    def handle(self, agent: Agent[Any, T], run_id: str) -> RunHandle[T]:
        """A typed handle of a run of `agent` submitted earlier."""
        return RunHandle.of(run_id, agent, self)

    def submit(
        self,
        agent: str | Agent[Any, Any],
        payload: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        celery_result: bool = True,
    ) -> str:
        """Enqueue one run and return its id (the first run's id for a repeated key)."""
        return self.submit_many(
            agent,
            [payload or {}],
            idempotency_keys=[idempotency_key],
            priority=priority,
            countdown=countdown,
            celery_result=celery_result,
        )[0]

    def submit_many(
        self,
        agent: str | Agent[Any, Any],
        payloads: Iterable[dict[str, Any]],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        chunk_size: int = 1000,
        on_progress: Progress | None = None,
        celery_result: bool = True,
    ) -> list[str]:
        """Enqueue many runs: validated up front, recorded and published in chunks.

        The output always lands in PostgreSQL, where `wait` and `result` read it. With
        `celery_result=False` the worker does not also write it to Celery's result backend,
        so `AsyncResult.get()` cannot read these runs: for bulky one-off outputs (search
        results) that would otherwise sit in Redis until `result_expires`.
        """
        agent = agent if isinstance(agent, str) else agent.name
        spec = self.app.agents.get(agent)
        items = [dict(p) for p in payloads]
        keys = list(idempotency_keys) if idempotency_keys is not None else [None] * len(items)
        if len(keys) != len(items):
            raise ValueError(f"idempotency_keys has {len(keys)} items for {len(items)} payloads")
        for item in items:
            spec.validate_input(item, self.app.validation_context)
            _check_message_size(agent, item, self.app.settings.max_message_bytes)
        if countdown is not None:
            check_countdown(self.app, spec, countdown)
        queue = self.app.agent_queue(spec)
        wire_priority = self.app.broker_priority(priority) if priority is not None else None
        self.waiter.listen()
        ids: list[str] = []
        for start in range(0, len(items), chunk_size):
            now = datetime.now(UTC)
            chunk = items[start : start + chunk_size]
            batch = [
                NewRun(
                    id=str(uuid.uuid4()),
                    agent=agent,
                    pool=spec.pool,
                    queue=queue,
                    input=spec.recorded_input(p),
                    idempotency_key=k,
                    enqueued_at=now,
                )
                for p, k in zip(chunk, keys[start : start + chunk_size], strict=True)
            ]
            by_id = {run.id: payload for run, payload in zip(batch, chunk, strict=True)}

            def publish(new: list[NewRun], by_id: dict[str, Any] = by_id) -> None:
                with self.app.producer_or_acquire() as producer:
                    for run in new:
                        self.app.send_task(
                            agent,
                            kwargs=by_id[run.id],
                            task_id=run.id,
                            queue=queue,
                            priority=wire_priority,
                            countdown=countdown,
                            producer=producer,
                            ignore_result=not celery_result,
                            headers={
                                HEADER_ENQUEUED_AT: _isoformat(run.enqueued_at),
                                HEADER_IDEMPOTENCY_KEY: run.idempotency_key,
                            },
                        )

            try:
                owners = self.runs.enqueue(batch, publish)
            except BrokerError as exc:
                raise ServiceUnavailable(f"broker unreachable: {exc}") from exc
            ids.extend(owners[r.id] for r in batch)
            self.waiter.published(r.id for r in batch if owners[r.id] == r.id)
            if on_progress is not None:
                on_progress(len(batch))
        return ids

    def get(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    def find(self, **filters: Any) -> list[Run]:
        """Runs newest first; filters: agent, status, since, until, limit."""
        return self.runs.find(**filters)

    def cancel(self, run_id: str, *, terminate: bool = False) -> bool:
        """Cancel a run: it will not start; with terminate, a started one is killed too."""
        self.app.control.revoke(run_id, terminate=terminate)
        return self.runs.cancel(run_id)

    def wait_many(
        self,
        run_ids: Iterable[str],
        timeout: float | None = None,
        on_progress: Progress | None = None,
    ) -> dict[str, Run]:
        """Block until every run reaches a final state; RunTimeout names how many did not.
        Several threads may wait at once on one client."""
        return self.waiter.wait_many(run_ids, timeout, on_progress)

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """Block until the run reaches a final state and return it."""
        return self.wait_many([run_id], timeout)[run_id]

    def result(self, run_id: str, timeout: float | None = None) -> Any:
        """The run's output; RunFailed if it ended in any other way."""
        run = self.wait(run_id, timeout)
        if run.status is not RunStatus.SUCCEEDED:
            raise RunFailed(run_id, run.status.value, run.error_message)
        return run.output

    def signature(self, agent: str, payload: dict[str, Any] | None = None) -> Signature:
        """A Celery signature for one agent call, for use in any canvas."""
        spec = self.app.agents.get(agent)
        return self.app.signature(agent, kwargs=payload or {}, queue=self.app.agent_queue(spec))

    def chain(self, *steps: Signature) -> str:
        """Run steps in order, each receiving the previous output merged into its input."""
        return str(chain(*steps).apply_async().id)

    def fan_out(self, branches: Sequence[Signature], then: Signature) -> str:
        """Run branches in parallel, then `then` with their outputs as `results`."""
        return str(chord(group(*branches))(then).id)
