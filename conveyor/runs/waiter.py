"""Waiting for runs to end without polling: LISTEN on PostgreSQL, where every final state is
committed together with its notification (runs.notify), then read the run if it did not
come along. PostgreSQL stays the one truth."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from conveyor.errors import RunTimeout, ServiceUnavailable
from conveyor.runs.notify import NOTIFY_CHANNEL, Notifications
from conveyor.runs.records import Run
from conveyor.runs.repository import RunRepository
from conveyor.runs.status import FINAL_STATUSES

Progress = Callable[[int], None]
_FINAL = {s.value for s in FINAL_STATUSES}


class Waiter:
    """One LISTEN connection and what it has heard: runs this process published (`fresh`,
    whose end it cannot have missed) and runs that ended before anyone waited for them.

    Threads may wait at once: one reads notifications at a time, for all of them.
    """

    def __init__(self, runs: RunRepository, database_url: str) -> None:
        self.runs = runs
        self.url = database_url.replace("+psycopg", "")
        self._listener: psycopg.Connection[Any] | None = None
        self._lock = threading.RLock()
        self._turn = threading.Condition(self._lock)
        self._reading = False
        self._waiting: Counter[str] = Counter()
        self._fresh: set[str] = set()
        self._finished: dict[str, Run | None] = {}
        self._notes = Notifications()

    def listen(self) -> psycopg.Connection[Any]:
        """The LISTEN connection; a producer opens it before its first publish so no
        notification of its runs is missed."""
        with self._lock:
            if self._listener is None or self._listener.closed:
                try:
                    self._listener = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
                    self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                except psycopg.OperationalError as exc:
                    first = str(exc).strip().splitlines()[0]
                    raise ServiceUnavailable(f"database unreachable: {first}") from None
                self._fresh.clear()
                self._finished.clear()
                self._notes.clear()
            return self._listener

    def published(self, run_ids: Iterable[str]) -> None:
        """Runs published after `listen()`: their end will be heard, no need to read them."""
        self._fresh.update(run_ids)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def wait_many(
        self,
        run_ids: Iterable[str],
        timeout: float | None = None,
        on_progress: Progress | None = None,
    ) -> dict[str, Run]:
        """Block until every run reaches a final state; RunTimeout names how many did not."""
        pending = set(run_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = self.listen()
        with self._lock:
            self._waiting.update(pending)
        try:
            self._note_ended_before(pending)
            return self._wait(conn, pending, deadline, timeout, on_progress)
        finally:
            with self._lock:
                self._waiting.subtract(pending)
                self._waiting = +self._waiting

    def _note_ended_before(self, pending: set[str]) -> None:
        """Runs not published here may have ended before anyone listened: read them."""
        with self._lock:
            unseen = list(pending - self._fresh)
        if unseen:
            ended = [r for r in self.runs.get_many(unseen).values() if r.status.value in _FINAL]
            with self._lock:
                self._finished.update((run.id, run) for run in ended)

    def _wait(
        self,
        conn: psycopg.Connection[Any],
        pending: set[str],
        deadline: float | None,
        timeout: float | None,
        on_progress: Progress | None,
    ) -> dict[str, Run]:
        done: dict[str, Run] = {}
        while True:
            with self._lock:
                finished = [i for i in pending if i in self._finished]
                noted = {i: self._finished.pop(i) for i in finished}
                self._fresh.difference_update(finished)
            if finished:
                done.update((i, run) for i, run in noted.items() if run is not None)
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
            self._hear(conn, pending, min(left or 1.0, 1.0))

    def _hear(self, conn: psycopg.Connection[Any], pending: set[str], timeout: float) -> None:
        """Read notifications for every waiting thread, or wait while another one reads."""
        with self._lock:
            if self._reading:
                if not any(i in self._finished for i in pending):
                    self._turn.wait(timeout)
                return
            self._reading = True
        try:
            self._collect(conn, timeout)
        finally:
            with self._lock:
                self._reading = False
                self._turn.notify_all()

    def _collect(self, conn: psycopg.Connection[Any], timeout: float) -> None:
        """Note final states from the next notifications, waiting at most `timeout`.

        The generators are always run to their end: leaving one early would drop the rest of
        the packet it is yielding from.
        """

        def wanted(run_id: str) -> bool:
            return run_id in self._waiting or run_id in self._fresh

        for note in conn.notifies(timeout=timeout, stop_after=1):
            self._note(note.payload, wanted)
        for note in conn.notifies(timeout=0):
            self._note(note.payload, wanted)

    def _note(self, payload: str, wanted: Callable[[str], bool]) -> None:
        with self._lock:
            if (ended := self._notes.read(payload, wanted)) is not None:
                self._finished[ended[0]] = ended[1]
