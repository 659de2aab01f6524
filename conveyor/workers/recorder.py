"""Group commit of run state changes: one transaction for all that arrive together."""

from __future__ import annotations

import logging
import os
import queue
import threading
from concurrent.futures import Future

from conveyor.models.repository import Outcome, RunRepository

log = logging.getLogger(__name__)
MAX_BATCH = 500


class RunRecorder:
    """Writes outcomes from many threads in shared transactions.

    `record()` blocks until the caller's outcome is committed, so a task never returns
    (and its message is never acknowledged) before its run is durable. While one batch
    commits, the next accumulates: under load a commit carries many runs.
    """

    def __init__(self, repository: RunRepository) -> None:
        self.repository = repository
        self._pending: queue.SimpleQueue[tuple[Outcome, Future[None]]] = queue.SimpleQueue()
        self._pid = 0
        self._lock = threading.Lock()

    def record(self, outcome: Outcome, timeout: float | None = None) -> None:
        """Queue an outcome for the next commit and wait until it is committed."""
        self._ensure_writer()
        done: Future[None] = Future()
        self._pending.put((outcome, done))
        done.result(timeout)

    def _ensure_writer(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._pending = queue.SimpleQueue()
                threading.Thread(
                    target=self._write_forever, name="conveyor-recorder", daemon=True
                ).start()

    def _write_forever(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            try:
                self.repository.record([outcome for outcome, _ in batch])
            except Exception as exc:
                log.warning("recording %d run(s) failed: %s", len(batch), exc)
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for _, done in batch:
                    done.set_result(None)
