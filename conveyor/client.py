"""Client: submit runs, wait for them, read their results, cancel them, build workflows."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from celery import chain, chord, group
from celery.canvas import Signature
from kombu.exceptions import OperationalError as BrokerError

from conveyor.app import ConveyorApp, create_app
from conveyor.config import Settings
from conveyor.errors import InvalidInput, RunFailed, RunTimeout, ServiceUnavailable
from conveyor.models.repository import NewRun, Run
from conveyor.models.runs import FINAL_STATUSES, RunStatus
from conveyor.models.statements import NOTIFY_CHANNEL
from conveyor.visibility import check_countdown
from conveyor.workers.execution import HEADER_ENQUEUED_AT, HEADER_IDEMPOTENCY_KEY

if TYPE_CHECKING:
    from conveyor.memory.api import MemoryAPI
    from conveyor.vector.api import VectorAPI

_FINAL = {s.value for s in FINAL_STATUSES}
_ROW_PREFIX = '{"id":"'
"""How a notification that carries a whole row starts (row_to_json, id first)."""
Progress = Callable[[int], None]


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

    `wait()` does not poll: it LISTENs on PostgreSQL, where every final state change is
    committed together with a NOTIFY, then reads the run. PostgreSQL stays the one truth.
    """

    def __init__(self, app: ConveyorApp | None = None, settings: Settings | None = None) -> None:
        self.app = app or create_app(settings)
        self.runs = self.app.runs
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()
        self._fresh: set[str] = set()
        self._finished: dict[str, Run | None] = {}
        self._parts: dict[str, list[str]] = {}

    @cached_property
    def memory(self) -> MemoryAPI:
        """Prompt memory: remember, recall, search, forget, stats (see conveyor.memory).

        Its `timeout` (seconds per call) can be changed: `client.memory.timeout = 300`.
        """
        from conveyor.memory.api import MemoryAPI

        return MemoryAPI(self)

    @cached_property
    def vector(self) -> VectorAPI:
        """Vector search: collections, upsert, delete, search (see conveyor.vector).

        Its `timeout` (seconds per call) can be changed: `client.vector.timeout = 600`.
        """
        from conveyor.vector.api import VectorAPI

        return VectorAPI(self)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(
        self,
        agent: str,
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
        agent: str,
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
        self._listen()
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
            self._fresh.update(r.id for r in batch if owners[r.id] == r.id)
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

    def _listen(self) -> psycopg.Connection[Any]:
        """The LISTEN connection, opened before the first publish so no notification is missed."""
        with self._listen_lock:
            if self._listener is None or self._listener.closed:
                url = str(self.app.settings.database_url).replace("+psycopg", "")
                try:
                    self._listener = psycopg.connect(url, autocommit=True, connect_timeout=10)
                    self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                except psycopg.OperationalError as exc:
                    first = str(exc).strip().splitlines()[0]
                    raise ServiceUnavailable(f"database unreachable: {first}") from None
                self._fresh.clear()
                self._finished.clear()
                self._parts.clear()
            return self._listener

    def wait_many(
        self,
        run_ids: Iterable[str],
        timeout: float | None = None,
        on_progress: Progress | None = None,
    ) -> dict[str, Run]:
        """Block until every run reaches a final state; RunTimeout names how many did not.

        Not for concurrent use from several threads: give each thread its own Client.
        """
        pending = set(run_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = self._listen()
        done: dict[str, Run] = {}
        unseen = list(pending - self._fresh)
        if unseen:
            for run in self.runs.get_many(unseen).values():
                if run.status.value in _FINAL:
                    self._finished[run.id] = run
        while True:
            finished = [i for i in pending if i in self._finished]
            if finished:
                for run_id in finished:
                    noted = self._finished.pop(run_id)
                    self._fresh.discard(run_id)
                    if noted is not None:
                        done[run_id] = noted
                unread = [i for i in finished if i not in done]
                if unread:
                    done.update(self.runs.get_many(unread))
                pending.difference_update(finished)
                if on_progress is not None:
                    on_progress(len(finished))
            if not pending:
                return done
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RunTimeout(
                    f"{len(pending)} run(s) not finished after {timeout}s, "
                    f"e.g. {next(iter(pending))}"
                )
            self._collect(conn, pending, min(left or 1.0, 1.0))

    def _collect(self, conn: psycopg.Connection[Any], pending: set[str], timeout: float) -> None:
        """Note final states from the next notifications, waiting at most `timeout`.

        The generators are always run to their end: leaving one early would drop the rest of
        the packet it is yielding from.
        """
        for note in conn.notifies(timeout=timeout, stop_after=1):
            self._note(note.payload, pending)
        for note in conn.notifies(timeout=0):
            self._note(note.payload, pending)

    def _note(self, payload: str, pending: set[str]) -> None:
        """Keep a final state this client waits for: the whole run, or just that it ended."""
        if payload.startswith("~"):
            payload = self._join_part(payload, pending)
            if not payload:
                return
        if payload.startswith(_ROW_PREFIX):
            run_id = payload[len(_ROW_PREFIX) : payload.find('"', len(_ROW_PREFIX))]
            if run_id in pending or run_id in self._fresh:
                run = Run.model_validate_json(payload)
                if run.status.value in _FINAL:
                    self._finished[run_id] = run
            return
        run_id, _, status = payload.partition(" ")
        if status in _FINAL and (run_id in pending or run_id in self._fresh):
            self._finished[run_id] = None

    def _join_part(self, payload: str, pending: set[str]) -> str:
        """Collect one part of a row sent in parts; the whole row once its last part is in.

        Parts of runs nobody here waits for are skipped unread.
        """
        run_id, part, parts, text = payload[1:].split(" ", 3)
        if part == "1" and (run_id in pending or run_id in self._fresh):
            self._parts[run_id] = []
        received = self._parts.get(run_id)
        if received is None or len(received) != int(part) - 1:
            self._parts.pop(run_id, None)
            return ""
        received.append(text)
        if part != parts:
            return ""
        return "".join(self._parts.pop(run_id))

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
