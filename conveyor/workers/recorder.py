"""Group commit of run state changes: one statement for all that arrive together."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from conveyor.models.repository import Outcome, RunRepository

MAX_BATCH = 500


class RunRecorder:
    """Writes outcomes from many threads in shared statements, without a thread of its own.

    `record()` returns once the caller's outcome is committed, so a task never returns (and
    its message is never acknowledged) before its run is durable. The first caller writes;
    callers that arrive while it writes queue up and the next of them writes them all at
    once. A single-threaded prefork child thus writes inline, and a threads pool under load
    commits many runs per round trip.
    """

    def __init__(self, repository: RunRepository) -> None:
        self.repository = repository
        self._turn = threading.Condition()
        self._pending: list[tuple[Outcome, Future[None]]] = []
        self._writing = False

    def record(self, outcome: Outcome) -> None:
        """Commit an outcome, alone or together with others that are waiting."""
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
            self.repository.record([o for o, _ in batch])
        except Exception as exc:
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
