"""Waiting on another thread's Future from a run on the event loop, with one wake-up of the
loop per burst of results instead of one per Future (asyncio.wrap_future's cost)."""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.util import await_only

T = TypeVar("T")


class Handover:
    """Hands finished Futures of writer threads to the waiting runs of one loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._arrived: list[tuple[asyncio.Future[Any], Future[Any]]] = []
        self._lock = threading.Lock()

    def wait(self, future: Future[T]) -> T:
        """The Future's result; the calling run's greenlet yields to the loop meanwhile."""
        waiter: asyncio.Future[T] = self.loop.create_future()
        future.add_done_callback(partial(self._arrive, waiter))
        return await_only(waiter)

    def _arrive(self, waiter: asyncio.Future[Any], future: Future[Any]) -> None:
        with self._lock:
            self._arrived.append((waiter, future))
            first = len(self._arrived) == 1
        if first:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, []
        for waiter, future in arrived:
            if waiter.done():
                continue
            if (error := future.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(future.result())


_handovers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Handover] = (
    weakref.WeakKeyDictionary()
)


def wait_on_loop(future: Future[T]) -> T:
    """`Handover.wait` on the running loop (called from a run's greenlet on it)."""
    loop = asyncio.get_running_loop()
    if (handover := _handovers.get(loop)) is None:
        handover = _handovers[loop] = Handover(loop)
    return handover.wait(future)
