"""Waiting for runs to end without polling: LISTEN on PostgreSQL, where every final state is
committed together with its notification (runs.notify), then read the run if it did not
come along. PostgreSQL stays the one truth."""

from __future__ import annotations

import threading
import time
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
    whose end it cannot have missed) and runs that ended before anyone waited for them."""

    def __init__(self, runs: RunRepository, database_url: str) -> None:
        self.runs = runs
        self.url = database_url.replace("+psycopg", "")
        self._listener: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
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
        """Block until every run reaches a final state; RunTimeout names how many did not.

        Not for concurrent use from several threads: give each thread its own waiter.
        """
        pending = set(run_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = self.listen()
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

        def wanted(run_id: str) -> bool:
            return run_id in pending or run_id in self._fresh

        for note in conn.notifies(timeout=timeout, stop_after=1):
            self._note(note.payload, wanted)
        for note in conn.notifies(timeout=0):
            self._note(note.payload, wanted)

    def _note(self, payload: str, wanted: Callable[[str], bool]) -> None:
        if (ended := self._notes.read(payload, wanted)) is not None:
            self._finished[ended[0]] = ended[1]
