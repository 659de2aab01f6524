"""The asyncio pool: one worker process keeps up to `concurrency` agent runs in flight on
one event loop, and stays a Celery worker (Flower, inspect, control and events see it so).

Celery hands a pool each message's trace, a synchronous call. This pool runs every trace in
a greenlet on the process's event loop (SQLAlchemy's `greenlet_spawn`): Celery's own code
(request context, result backend, acks late, events) runs as in any pool, and where the
agent's task reaches its pipeline it awaits `execute_async` instead (`await_only`), so a
waiting run holds no thread and no slot of another run. Sync agents run in the loop's
bounded thread executor; the steps' database round trips run inline in the trace (measured
cheaper than a thread hop each, see the README's architecture section).

A run's agent call is the first asyncio task its trace creates (the loop's task factory
marks it). Cancelling it ends the run without the pipeline recording a failure: on
`revoke(terminate=True)` the run is `Terminated` (the revoke recorded it `cancelled` and
acked its message); on a shutdown (warm, once its grace has run out, or cold) it is
`HandedBack` (its message goes back to the broker and the run stays `started`, for its
redelivery to run again). A watchdog (`workers.stalls`) reports event-loop stalls.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from types import FrameType
from typing import Any

from celery.concurrency.base import BasePool, apply_target
from celery.exceptions import Ignore, Reject
from celery.worker import state as worker_state
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet

from conveyor.workers.asyncloop import process_loop
from conveyor.workers.stalls import Stall, StallWatch

log = logging.getLogger(__name__)

BLOCKING_THREADS = 64
"""Threads for the sync agents an asyncio pool runs."""
GC_THRESHOLDS = (100_000, 50, 50)
"""The cyclic garbage collector's thresholds in an asyncio worker. With thousands of runs in
flight, each holding hundreds of live objects, Python's default (700, 10, 10) traverses them
over and over: measured 20 to 25 % of the CPU a waiting run costs. The objects of start-up (the
app, agents, modules) are frozen out of every collection too."""
ALIAS = "conveyor.workers.aio_pool:AsyncIOPool"
"""What `--pool` is given for a pool of kind `asyncio`."""
CLEAN_UP_SECONDS = 10.0
"""How long runs handed back at a warm shutdown may clean up once their call is cancelled."""
COLD_SECONDS = 2.0
"""The same on a cold shutdown."""
STALL_EVENT = "worker-loop-stall"
"""The Celery event a stall sends (fields seconds, runs, ended), counted by the exporter."""

_on_pool: contextvars.ContextVar[bool] = contextvars.ContextVar("conveyor_aio", default=False)


def on_async_pool() -> bool:
    """Whether this code runs in a trace of the asyncio pool (may `await_only`); not in a
    sync agent's thread, which inherits the trace's context."""
    return _on_pool.get() and in_greenlet()


class Terminated(Ignore):
    """Ends a run revoked with terminate=True where its call was cancelled. The revoke has
    recorded it `cancelled` and acked its message, so nothing more is recorded (the pipeline
    passes Celery's control exceptions through unrecorded) or reported (an Ignore)."""


class HandedBack(Reject):
    """Ends a run a shutdown hands back: the pipeline records nothing, so the run stays
    `started` for its redelivery to reclaim, and Celery rejects the message with requeue,
    so the broker delivers it again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, requeue=True)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.reason,)


Fate = type[Terminated] | type[HandedBack]


class _Untraced(logging.Filter):
    """Celery logs every rejected run with its traceback; a handed-back one needs none (a
    thousand at a shutdown would hold the loop for seconds)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HandedBack):
            record.exc_info = None
        return True


@dataclass(eq=False)
class _Run:
    """One trace on the pool, as far as ending it early goes."""

    id: str
    agent: str
    call: asyncio.Task[Any] | None = None
    """The agent's call: the first task the trace created."""
    calling: bool = False
    """Whether the call has begun (a task cancelled before it begins runs none of its code)."""
    fate: Fate | None = None
    """How the run must end once its call is cancelled (or at once, if it has none yet)."""

    def end(self, fate: Fate) -> None:
        """On the loop: cancel the call (now, or as it starts) so the run ends as `fate`."""
        if self.fate is not None:
            return
        self.fate = fate
        if self.call is not None and self.calling:
            self.call.cancel()

    def ending(self) -> BaseException:
        assert self.fate is not None
        if self.fate is HandedBack:
            return HandedBack(f"run {self.id} handed back to the broker: the worker stops")
        return Terminated(f"run {self.id} terminated: revoked with terminate=True")


_UNTRACED = _Untraced()
_run: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("conveyor_run", default=None)


class ApplyResult:
    """What the pool returns per message: Celery may wait on it, or terminate it. Lighter
    than a concurrent Future (no lock of its own per run in flight): it is settled on the
    loop, and waited on through its pool's one condition."""

    def __init__(self, pool: AsyncIOPool, run: _Run, loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self.run, self.loop = pool, run, loop
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def get(self, timeout: float | None = None) -> Any:
        if not self.pool.wait_until(lambda: self.done, timeout):
            raise TimeoutError(f"run {self.run.id} not done in {timeout}s")
        if self.error is not None:
            raise self.error
        return self.value

    def wait(self, timeout: float | None = None) -> None:
        self.pool.wait_until(lambda: self.done, timeout)

    def terminate(self, signum: int | None = None) -> None:
        """Celery's Request.terminate (a revoke) or Request.cancel (a cold shutdown, a lost
        connection: the message must go back, so the run is handed back)."""
        fate = Terminated if self.run.id in worker_state.revoked else HandedBack
        self.loop.call_soon_threadsafe(self.run.end, fate)


class AsyncIOPool(BasePool):
    """Runs each task's trace in a greenlet on the process loop; `limit` is its slots."""

    signal_safe = False
    body_can_be_buffer = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight: dict[_Run, ApplyResult] = {}
        self._settled = threading.Condition()
        self._arriving: list[tuple[Coroutine[Any, Any, Any], ApplyResult]] = []
        self._arriving_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stalls: StallWatch | None = None

    def on_start(self) -> None:
        logging.getLogger("celery.app.trace").addFilter(_UNTRACED)
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        self.loop = process_loop()
        self.loop.call_soon_threadsafe(_prepare, self.loop)
        threshold = self._setting("loop_stall_seconds", 1.0)
        if threshold > 0:
            self.stalls = StallWatch(self.loop, threshold, self._send_stall, _run_of)
            self.stalls.start()

    def on_apply(self, *args: Any, **kwargs: Any) -> ApplyResult:  # type: ignore[override]
        """Celery's `on_apply(target, args, kwargs, callback, accept_callback, ...)` (its
        pools return their ApplyResult, which celery-types types as None)."""
        assert self.loop is not None, "the pool is started before it is given work"
        request = getattr(kwargs.get("accept_callback"), "__self__", None)
        run = _Run(str(getattr(request, "id", "?")), str(getattr(request, "name", "?")))
        result = ApplyResult(self, run, self.loop)
        with self._settled:
            self.in_flight[run] = result
        with self._arriving_lock:
            self._arriving.append((_trace(run, *args, **kwargs), result))
            first = len(self._arriving) == 1
        if first:
            self.loop.call_soon_threadsafe(self._start_arrived)
        return result

    def _start_arrived(self) -> None:
        """On the loop: a task for each trace given since the last call (one wake-up of the
        loop per burst of messages, not one per message as run_coroutine_threadsafe)."""
        with self._arriving_lock:
            arrived, self._arriving = self._arriving, []
        for coro, result in arrived:
            asyncio.ensure_future(coro).add_done_callback(partial(self._settle, result))

    def _settle(self, result: ApplyResult, task: asyncio.Task[Any]) -> None:
        """On the loop: a trace's task ended; its outcome to its ApplyResult."""
        if task.cancelled():
            result.error = asyncio.CancelledError()
        elif (error := task.exception()) is not None:
            result.error = error
        else:
            result.value = task.result()
        with self._settled:
            result.done = True
            self.in_flight.pop(result.run, None)
            self._settled.notify_all()

    def wait_until(self, settled: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until `settled()` (checked as runs end), at most `timeout` seconds."""
        with self._settled:
            return self._settled.wait_for(settled, timeout)

    def terminate_job(self, pid: int, signal: int | None = None) -> None:
        """Celery calls this first (a revoke with terminate, a cold shutdown's cancel); the
        run's call is cancelled by its ApplyResult's `terminate`, which Celery calls next,
        once a revoke is recorded (`pid` names no run here: runs share the process)."""

    def on_stop(self) -> None:
        """Warm shutdown: the consumer takes no more messages. The runs in flight get the
        grace (CONVEYOR_SHUTDOWN_GRACE_SECONDS) to end; the rest are handed back."""
        grace = self._setting("shutdown_grace_seconds", 30.0)
        pending = not self.wait_until(lambda: not self.in_flight, grace)
        self._stop_watch()  # ending a thousand runs at once is no stall
        if pending:
            self._hand_back(CLEAN_UP_SECONDS, f"after the {grace:g}s shutdown grace")

    def on_terminate(self) -> None:
        """Cold shutdown: every run in flight is handed back at once."""
        self._stop_watch()
        self._hand_back(COLD_SECONDS, "on a cold shutdown")

    def _hand_back(self, clean_up: float, when: str) -> None:
        """Cancel every call in flight so its run ends HandedBack; a trace not begun never
        takes its message, which the broker gets back when the connection closes."""
        with self._settled:
            results = list(self.in_flight.values())
        if not results or self.loop is None:
            return
        log.warning("handing %d run(s) back to the broker %s", len(results), when)
        for result in results:
            self.loop.call_soon_threadsafe(result.run.end, HandedBack)
        self.wait_until(lambda: all(r.done for r in results), clean_up)
        if left := [r for r in results if not r.done]:
            log.warning(
                "%d run(s) ignored their cancellation for %gs; their messages go back to the "
                "broker when the worker's connection closes",
                len(left),
                clean_up,
            )

    def _stop_watch(self) -> None:
        if self.stalls is not None:
            self.stalls.stop()

    def _send_stall(self, stall: Stall) -> None:
        """A stall as a Celery event from this worker's node (the exporter counts it)."""
        if self.app is None:
            return
        hostname = (self.options.get("initargs") or (None, None))[1]
        with self.app.events.default_dispatcher(hostname=hostname) as dispatcher:
            dispatcher.send(
                STALL_EVENT, seconds=round(stall.seconds, 3), runs=list(stall.runs),
                ended=stall.ended,
            )  # fmt: skip

    def _setting(self, name: str, default: float) -> float:
        return float(getattr(getattr(self.app, "settings", None), name, default))

    def _get_info(self) -> dict[str, Any]:
        """What `celery inspect stats` and Flower show of the pool."""
        return {
            "implementation": f"{type(self).__module__}:{type(self).__name__}",
            "max-concurrency": self.limit,
            "in-flight": len(self.in_flight),
            "loop-lag": round(self.stalls.lag(), 3) if self.stalls else None,
        }

    @property
    def num_processes(self) -> int:
        return int(self.limit or 0)


def _prepare(loop: asyncio.AbstractEventLoop) -> None:
    """On the loop: the sync agents' threads, and the factory that marks each run's call."""
    loop.set_default_executor(ThreadPoolExecutor(BLOCKING_THREADS, "conveyor-blocking"))
    loop.set_task_factory(_task_factory)


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **options: Any) -> asyncio.Task[Any]:
    """Every task of the loop; the first one a trace creates is its run's call."""
    run = _run.get()
    if run is None or run.call is not None:
        return asyncio.Task(coro, loop=loop, **options)
    run.call = asyncio.Task(_call(run, coro), loop=loop, **options)
    return run.call


async def _call(run: _Run, coro: Any) -> Any:
    """The agent's call; cancelled to end the run early, it ends as the run's fate says."""
    run.calling = True
    if run.fate is not None:
        coro.close()
        raise run.ending()
    try:
        return await coro
    except asyncio.CancelledError:
        if run.fate is None:
            raise
        raise run.ending() from None


async def _trace(
    run: _Run,
    target: Callable[..., Any],
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    callback: Callable[..., Any] | None = None,
    accept_callback: Callable[..., Any] | None = None,
    **_: Any,
) -> Any:
    """One message's trace, in a greenlet of its own task (so its own context)."""
    if run.fate is HandedBack:
        return None
    _on_pool.set(True)
    _run.set(run)
    return await greenlet_spawn(_traced, run, target, args, kwargs, callback, accept_callback)


def _traced(run: _Run, target: Callable[..., Any], *args: Any) -> Any:
    """The trace in its greenlet (the stall watchdog finds `run` on the stack here)."""
    return apply_target(target, *args)


_MARKED = (_call.__code__, _traced.__code__)


def _run_of(frame: FrameType) -> str | None:
    """The run a frame of the loop thread works for, if it is one of the pool's own."""
    if frame.f_code not in _MARKED:
        return None
    run = frame.f_locals.get("run")
    return f"{run.id} ({run.agent})" if isinstance(run, _Run) else None
