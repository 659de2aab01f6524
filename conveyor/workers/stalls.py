"""The asyncio pool's stall watchdog: a thread asks the event loop for a callback every tenth
of a second, and when the answer is late by the threshold it reports a stall, naming the
runs the loop was executing meanwhile. A blocking call in async code (time.sleep, CPU work,
sync I/O) holds every run of the process; this makes it loud instead of silent."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger(__name__)

INTERVAL = 0.1
"""Seconds between two heartbeats, and between two looks at a late loop's stack."""


@dataclass(frozen=True)
class Stall:
    """The loop was `seconds` late to run a callback (so far, unless `ended`)."""

    seconds: float
    runs: tuple[str, ...]
    """What the loop executed in at least half of the looks while it was late."""
    ended: bool


class StallWatch:
    """Watches `loop` from a daemon thread; `report` gets a Stall when one is noticed and
    again when it ends. `label(frame)` names the run a frame of the loop's stack belongs to,
    or returns None."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        report: Callable[[Stall], None],
        label: Callable[[FrameType], str | None],
    ) -> None:
        self.loop, self.threshold, self.report, self.label = loop, threshold, report, label
        self._stop = threading.Event()
        self._loop_thread: Future[int] = Future()
        self._waiting_since: float | None = None

    def lag(self) -> float:
        """How late the loop is to answer the heartbeat now (0.0 while it keeps up)."""
        since = self._waiting_since
        return 0.0 if since is None else time.monotonic() - since

    def start(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self._loop_thread.set_result(threading.get_ident()))
        threading.Thread(target=self._run, name="conveyor-stall-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def executing(self) -> set[str]:
        """The runs whose frames are on the loop thread's stack right now."""
        if not self._loop_thread.done():
            return set()
        frame: FrameType | None = sys._current_frames().get(self._loop_thread.result())
        found = set()
        while frame is not None:
            if (name := self.label(frame)) is not None:
                found.add(name)
            frame = frame.f_back
        return found

    def _run(self) -> None:
        answered = threading.Event()
        while not self._stop.wait(INTERVAL):
            answered.clear()
            sent = time.monotonic()
            try:
                self.loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop is closed
                return
            self._await(answered, sent)
            self._waiting_since = None

    def _await(self, answered: threading.Event, sent: float) -> None:
        """Wait for the heartbeat's answer, looking at the loop's stack while it is late."""
        seen: Counter[str] = Counter()
        looks, noticed = 0, False
        while not answered.wait(INTERVAL):
            self._waiting_since = self._waiting_since or sent
            looks += 1
            seen.update(self.executing())
            if not noticed and time.monotonic() - sent >= self.threshold:
                noticed = True
                self._tell(Stall(time.monotonic() - sent, _most(seen, looks), ended=False))
            if self._stop.is_set():
                return
        if noticed:
            self._tell(Stall(time.monotonic() - sent, _most(seen, looks), ended=True))

    def _tell(self, stall: Stall) -> None:
        runs = ", ".join(stall.runs) or "no single run (too much work on the loop?)"
        if stall.ended:
            log.warning("the event loop was stalled for %.2fs; it ran: %s", stall.seconds, runs)
        else:
            log.warning(
                "the event loop is stalled (%.2fs so far), every run of this worker waits; "
                "it runs: %s. A blocking call in async code (time.sleep, CPU work, sync I/O) "
                "belongs in a thread (asyncio.to_thread) or in a sync agent",
                stall.seconds,
                runs,
            )
        try:
            self.report(stall)
        except Exception as exc:
            log.warning("could not report an event loop stall: %s", exc)


def _most(seen: Counter[str], looks: int) -> tuple[str, ...]:
    return tuple(sorted(name for name, n in seen.items() if 2 * n >= looks))
