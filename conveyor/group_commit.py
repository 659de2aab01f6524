"""Group commit on a writer thread: the writes of many concurrent runs share statements,
while each run waits on a Future of its own (a coroutine of the asyncio pool, without
blocking the event loop)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")
MAX_BATCH = 500
GATHER_SECONDS = 0.005
"""Under load (the last batch held several items and was written within BUSY_SECONDS), how
long the writer waits for more items before writing: bigger batches, fewer statements. A
lone write does not wait."""
BUSY_SECONDS = 0.02

log = logging.getLogger(__name__)


class Settle(Protocol):
    """How a caller waits for its write's Future: on the asyncio pool, its run's greenlet
    yields to the event loop meanwhile (conveyor.workers.pipeline.settle)."""

    def __call__(self, future: Future[V], /) -> V: ...


class WriterThread(Generic[T, R]):
    """Writes the items queued from any thread in batches of up to `max_batch`, one batch at
    a time, on a daemon thread started on first use (which first calls `on_start`). `write`
    returns one result per item, in order; if it raises, every item of that batch gets the
    exception."""

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = MAX_BATCH,
        on_start: Callable[[], object] | None = None,
    ) -> None:
        self.name, self.write, self.max_batch, self.on_start = name, write, max_batch, on_start
        self._pending: list[tuple[T, Future[R]]] = []
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._last_write = 0.0
        self._last_size = 0

    def submit(self, item: T) -> Future[R]:
        """Queue one item; the Future resolves once the batch holding it is written."""
        done: Future[R] = Future()
        with self._ready:
            self._pending.append((item, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            if len(self._pending) in (1, self.max_batch):
                self._ready.notify()
        return done

    def _run(self) -> None:
        if self.on_start is not None:
            self.on_start()
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
                if self._last_size > 1 and time.monotonic() - self._last_write < BUSY_SECONDS:
                    self._ready.wait_for(self._full, GATHER_SECONDS)
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
            self._write(batch)
            self._last_write, self._last_size = time.monotonic(), len(batch)

    def _full(self) -> bool:
        return len(self._pending) >= self.max_batch

    def _write(self, batch: list[tuple[T, Future[R]]]) -> None:
        try:
            results = self.write([item for item, _ in batch])
        except BaseException as exc:
            for _, done in batch:
                done.set_exception(exc)
            return
        for (_, done), result in zip(batch, results, strict=True):
            done.set_result(result)
