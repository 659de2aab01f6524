"""Group commit of run state changes, retried through a database outage within a budget."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar, cast

from celery.exceptions import Reject
from kombu.utils.functional import retry_over_time
from sqlalchemy.exc import InterfaceError, OperationalError

from conveyor.group_commit import MAX_BATCH, Settle, WriterThread
from conveyor.runs.records import Claim, ClaimRequest, NewRun, Outcome
from conveyor.runs.repository import RunRepository

DEFAULT_RETRY_SECONDS = 120.0
RETRY_FIRST_WAIT = 0.1
RETRY_WAIT_STEP = 0.5
RETRY_MAX_WAIT = 5.0
TRANSIENT = (OperationalError, InterfaceError)
"""What a restarting or unreachable PostgreSQL raises; anything else is a bug or bad data,
never retried."""

log = logging.getLogger(__name__)
T = TypeVar("T")


class Letter(Protocol):
    """A dead letter, as far as the recorder cares (conveyor.dlq.NewDeadLetter)."""

    @property
    def run_id(self) -> str | None: ...


L = TypeVar("L", bound=Letter, contravariant=True)


class LetterStore(Protocol[L]):
    """Where dead letters are written (conveyor.dlq.DeadLetterStore)."""

    def add(self, letter: L) -> int | None: ...


class RecordingUnavailable(Reject):
    """The run store stayed unreachable for the whole retry budget.

    A Celery `Reject` with requeue: raised in a task, the worker hands the message back to
    the broker unacknowledged, so a run is never acked without its outcome being durable.
    The redelivery finds the run not final and runs it again (effects stay once through
    `effect_once`). It keeps Reject's constructor, so the pool can ship it from the child
    process that raised it to the worker.
    """


class RunRecorder:
    """Writes outcomes from many threads in shared statements, without a thread of its own
    (or, on the asyncio pool, with writer threads: see `write_in_groups`).

    `record()` returns once the caller's outcome is committed, so a task never returns (and
    its message is never acknowledged) before its run is durable. The first caller writes;
    callers that arrive while it writes queue up and the next of them writes them all at
    once. A single-threaded prefork child thus writes inline, and a threads pool under load
    commits many runs per round trip.

    Claims and outcomes ride out a database restart: a write that fails on a lost connection
    is retried with growing waits (RETRY_FIRST_WAIT, then RETRY_WAIT_STEP more each time, at
    most RETRY_MAX_WAIT) for up to `retry_seconds`, then raises RecordingUnavailable.
    """

    def __init__(
        self, repository: RunRepository, retry_seconds: float = DEFAULT_RETRY_SECONDS
    ) -> None:
        self.repository = repository
        self.retry_seconds = retry_seconds
        self._turn = threading.Condition()
        self._pending: list[tuple[Outcome, Future[None]]] = []
        self._writing = False
        self._settle: Settle | None = None
        self._claims: WriterThread[ClaimRequest, Claim] | None = None
        self._outcomes: WriterThread[Outcome, None] | None = None

    def write_in_groups(self, settle: Settle) -> None:
        """From now on claims and outcomes are written by two writer threads, each batch in
        one statement, and a caller waits for its own with `settle(future)`: the asyncio
        pool's runs then wait without blocking the event loop, and thousands of concurrent
        runs share a few round trips."""
        keep = self.repository.keep_connection
        self._claims = WriterThread("conveyor-claims", self._claim_batch, on_start=keep)
        self._outcomes = WriterThread("conveyor-records", self._record_batch, on_start=keep)
        self._settle = settle

    def claim(self, run: NewRun, worker: str, *, redelivered: bool = False) -> Claim:
        """RunRepository.claim, retried through an outage."""
        if self._settle is not None and self._claims is not None:
            return self._settle(self._claims.submit(ClaimRequest(run, worker, redelivered)))
        return self._durably(
            f"the start of run {run.id}", self.repository.claim, run, worker,
            redelivered=redelivered,
        )  # fmt: skip

    def _claim_batch(self, claims: list[ClaimRequest]) -> list[Claim]:
        what = f"the start of {len(claims)} run(s), first {claims[0].run.id}"
        return self._durably(what, self.repository.claim_many, claims)

    def _record_batch(self, outcomes: list[Outcome]) -> list[None]:
        what = f"{len(outcomes)} run outcome(s), first {outcomes[0].run.id}"
        self._durably(what, self.repository.record, outcomes)
        return [None] * len(outcomes)

    def dead_letter(self, store: LetterStore[L], letter: L) -> int | None:
        """DeadLetterStore.add, retried through an outage like a claim: a run is dead-lettered
        before its failure is recorded, so that write must not be lost either."""
        return self._durably(f"the dead letter of run {letter.run_id}", store.add, letter)

    def record(self, outcome: Outcome) -> None:
        """Commit an outcome, alone or together with others that are waiting."""
        if self._settle is not None and self._outcomes is not None:
            return self._settle(self._outcomes.submit(outcome))
        done: Future[None] = Future()
        with self._turn:
            self._pending.append((outcome, done))
            while self._writing and not done.done():
                self._turn.wait()
            if done.done():
                return done.result()
            self._writing = True
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        try:
            self._record_batch([o for o, _ in batch])
        except BaseException as exc:
            for _, waiter in batch:
                waiter.set_exception(exc)
        else:
            for _, waiter in batch:
                waiter.set_result(None)
        finally:
            with self._turn:
                self._writing = False
                self._turn.notify_all()
        return done.result()

    def _durably(self, what: str, write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def retrying(exc: Exception, waits: Iterator[float], retries: int) -> float:
            wait = next(waits)
            log.warning(
                "recording %s failed (%s); retry %d in %.1fs",
                what,
                _first_line(exc),
                retries + 1,
                wait,
            )
            return wait

        try:
            result: T = retry_over_time(
                write,
                TRANSIENT,
                args,
                kwargs,
                errback=cast(Any, retrying),  # kombu's stub types it wrongly
                interval_start=RETRY_FIRST_WAIT,
                interval_step=RETRY_WAIT_STEP,
                interval_max=RETRY_MAX_WAIT,
                timeout=self.retry_seconds,
                max_retries=None if self.retry_seconds > 0 else 0,
            )
        except TRANSIENT as exc:
            log.error(
                "giving up recording %s after %gs: %s", what, self.retry_seconds, _first_line(exc)
            )
            raise RecordingUnavailable(
                f"could not record {what}: the database was unreachable for "
                f"{self.retry_seconds:g}s (CONVEYOR_RECORD_RETRY_SECONDS): {_first_line(exc)}",
                requeue=True,
            ) from exc
        return result


def _first_line(exc: BaseException) -> str:
    """The error without the statement and parameters SQLAlchemy appends (run input)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
