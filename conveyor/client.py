"""Client: submit runs, wait for them, read their results, cancel them, build workflows."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import cached_property, lru_cache, partial
from typing import Any, ParamSpec, TypeVar, overload

import orjson
from celery import chain, chord, group
from celery.canvas import Signature
from kombu.exceptions import OperationalError as BrokerError
from pydantic import BaseModel, TypeAdapter, ValidationError

from conveyor.agents import Agent
from conveyor.app import create_app, resolve_services
from conveyor.broker.bulk import BulkPublisher, Prepared, uuid4_texts
from conveyor.celery_app import ConveyorApp
from conveyor.config import Settings
from conveyor.errors import InvalidInput, RunFailed, ServiceUnavailable
from conveyor.handle import RunHandle
from conveyor.memory.api import MemoryAPI
from conveyor.runs.headers import HEADER_ENQUEUED_AT, HEADER_IDEMPOTENCY_KEY
from conveyor.runs.queued import QueuedBatch
from conveyor.runs.records import Run
from conveyor.runs.status import RunStatus
from conveyor.runs.visibility import check_countdown
from conveyor.runs.waiter import Progress, Waiter
from conveyor.vector.api import VectorAPI

P = ParamSpec("P")
T = TypeVar("T")


@lru_cache(maxsize=256)
def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


VALIDATION_SLICE = 200
"""Payloads validated in one call."""


def _validate_all(spec: Agent[Any, Any], items: list[dict[str, Any]], context: Any) -> None:
    """Validate every payload against the agent's input model, a slice at a time (ten times
    faster than one at a time: a slice's models die young, where thousands alive at once
    set off the garbage collector); if any is invalid, the first raises InvalidInput as
    `validate_input` words it."""
    adapter = _list_adapter(spec.input_model)
    try:
        for start in range(0, len(items), VALIDATION_SLICE):
            adapter.validate_python(items[start : start + VALIDATION_SLICE], context=context)
    except ValidationError:
        for item in items:
            spec.validate_input(item, context)


def _build_and_send(
    publisher: BulkPublisher,
    ids: Sequence[str],
    kwargs: list[dict[str, Any]],
    headers: list[dict[str, Any]],
    positions: list[int],
) -> None:
    """Publish the runs at `positions` of a chunk (those the repository inserted)."""
    publisher.send(
        publisher.build(
            [ids[p] for p in positions],
            [kwargs[p] for p in positions],
            [headers[p] for p in positions],
        )
    )


def _send_prepared(publisher: BulkPublisher, prepared: Prepared, positions: list[int]) -> None:
    """Publish a chunk built beforehand (all of its runs: they have no keys)."""
    publisher.send(prepared)


class _Inline:
    """An executor that runs each call at once, on this thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *_: object) -> None:
        pass


_INLINE = _Inline()


class _Runs:
    """The runs of one submit_many, cut into chunks as the repository and broker take them."""

    def __init__(
        self,
        spec: Agent[Any, Any],
        queue: str,
        ids: list[str],
        items: list[dict[str, Any]],
        keys: list[str | None],
    ) -> None:
        self.spec, self.queue = spec, queue
        self.ids, self.items, self.keys = ids, items, keys

    def chunk(
        self, start: int, end: int
    ) -> tuple[QueuedBatch, list[dict[str, Any]], list[dict[str, Any]]]:
        """Runs start..end: their batch (enqueued now), kwargs and message headers."""
        now = datetime.now(UTC)
        items, keys = self.items[start:end], self.keys[start:end]
        spec = self.spec
        batch = QueuedBatch(
            agent=spec.name,
            pool=spec.pool,
            queue=self.queue,
            enqueued_at=now,
            ids=self.ids[start:end],
            inputs=[spec.recorded_input(p) for p in items],
            keys=keys,
        )
        at = now.isoformat()
        headers = [{HEADER_ENQUEUED_AT: at, HEADER_IDEMPOTENCY_KEY: k} for k in keys]
        return batch, items, headers


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

        Each chunk's messages are built as Celery builds them and published at once (on
        Redis, in one pipeline: conveyor.broker.bulk). A chunk of runs without idempotency
        keys is recorded right after its publish while the next chunk is built; every run is
        recorded when this returns (`RunRepository.enqueue` has the guarantee).

        The output always lands in PostgreSQL, where `wait` and `result` read it. With
        `celery_result=False` the worker does not also write it to Celery's result backend,
        so `AsyncResult.get()` cannot read these runs: for bulky one-off outputs (search
        results) that would otherwise sit in Redis until `result_expires`.
        """
        agent = agent if isinstance(agent, str) else agent.name
        spec = self.app.agents.get(agent)
        items = [dict(p) for p in payloads]
        keys: list[str | None] = [None] * len(items)
        if idempotency_keys is not None:
            keys = list(idempotency_keys)
        if len(keys) != len(items):
            raise ValueError(f"idempotency_keys has {len(keys)} items for {len(items)} payloads")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        _validate_all(spec, items, self.app.validation_context)
        limit = self.app.settings.max_message_bytes
        for item in items:
            _check_message_size(agent, item, limit)
        if countdown is not None:
            check_countdown(self.app, spec, countdown)
        queue = self.app.agent_queue(spec)
        wire_priority = self.app.broker_priority(priority) if priority is not None else None
        self.waiter.listen()
        runs = _Runs(spec, queue, uuid4_texts(len(items)), items, keys)
        try:
            with self.app.producer_or_acquire() as producer:
                publisher = BulkPublisher(
                    self.app,
                    producer,
                    agent,
                    queue=queue,
                    priority=wire_priority,
                    countdown=countdown,
                    ignore_result=not celery_result,
                )
                return self._submit_chunks(runs, publisher, chunk_size, on_progress)
        except BrokerError as exc:
            raise ServiceUnavailable(f"broker unreachable: {exc}") from exc

    def _submit_chunks(
        self, runs: _Runs, publisher: BulkPublisher, size: int, on_progress: Progress | None
    ) -> list[str]:
        """Record and publish `runs` chunk by chunk. On Redis, a chunk without keys is
        published by a thread of this call, then recorded by another, while this thread builds
        the next chunk's messages (elsewhere `send_task` publishes each message from the
        caller's thread, as Celery's RPC results need)."""
        owners: list[str] = []
        pending: list[tuple[QueuedBatch, Future[list[str]]]] = []

        def settle() -> None:
            while pending:
                batch, future = pending.pop(0)
                chunk_owners = future.result()
                owners.extend(chunk_owners)
                self.waiter.published(
                    i for i, o in zip(batch.ids, chunk_owners, strict=True) if i == o
                )
                if on_progress is not None:
                    on_progress(len(batch))

        overlap = len(runs.ids) > size and publisher.batched
        recorder = ThreadPoolExecutor(1, "conveyor-record") if overlap else _INLINE
        sender = ThreadPoolExecutor(1, "conveyor-publish") if overlap else _INLINE
        # leaving the block waits for the publish, then the records, in flight: nothing of
        # this call is published or recorded once it has returned or raised
        with recorder, sender:
            for start in range(0, len(runs.ids), size):
                batch, kwargs, headers = runs.chunk(start, start + size)
                if batch.keyed:  # inserted and published in one transaction, on this thread
                    settle()
                    publish = partial(_build_and_send, publisher, batch.ids, kwargs, headers)
                    pending.append((batch, _INLINE.submit(self.runs.enqueue_batch, batch, publish)))
                else:
                    prepared = publisher.build(batch.ids, kwargs, headers)
                    send = partial(_send_prepared, publisher, prepared)
                    settle()
                    job = sender.submit(self.runs.enqueue_batch, batch, send, recorder.submit)
                    pending.append((batch, job))
                if not overlap or batch.keyed:
                    settle()
            settle()
        return owners

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
