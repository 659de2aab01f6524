"""Celery's Redis result backend, tuned for conveyor's hot path; its RPC backend, bounded.

- No SUBSCRIBE for every submit: conveyor's Client waits for runs on PostgreSQL
  (LISTEN/NOTIFY), so subscribing to each task's result channel at submit time is wasted
  work. `AsyncResult.get()` still subscribes when it is called, and first reads any result
  already stored, so plain-Celery reads keep working.
- One round trip per state: Celery reads the stored state before writing a new one, so
  that a late duplicate never overwrites a success; a server-side script does both at once.
- The STARTED state (`task_track_started`) is written in the background, overlapping the
  run instead of delaying it, and is dropped when the run ends before it was written.
  A later state always waits for an in-flight STARTED write, so it is never overwritten.
- RPC (RabbitMQ's default here): Celery declares the reply queue before every publish,
  retrying forever, so a submit hung while RabbitMQ was down; here it retries as the
  publish does (`task_publish_retry_policy`), and the submit fails with ServiceUnavailable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from celery import states

# Celery's RPCBackend.on_task_call skips the declare by this flag and exposes it nowhere public.
from celery._state import task_join_will_block  # type: ignore[attr-defined]
from celery.backends.redis import RedisBackend
from celery.backends.rpc import RPCBackend
from celery.exceptions import BackendStoreError
from kombu.common import maybe_declare
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import NoScriptError

from conveyor.background import background_writer
from conveyor.group_commit import Settle, WriterThread

OVERRIDES = {alias: f"{__name__}:RedisResults" for alias in ("redis", "rediss")}
OVERRIDES["rpc"] = f"{__name__}:RPCResults"
log = logging.getLogger(__name__)
REDIS_MAX_VALUE_SIZE = 512 * 1024 * 1024
"""Redis's limit on one string value, which Celery's Redis backend checks before it writes."""

SET_UNLESS_SUCCEEDED = """
local current = redis.call('GET', KEYS[1])
if current then
    local ok, meta = pcall(cjson.decode, current)
    if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
        return 0
    end
end
if tonumber(ARGV[2]) > 0 then
    redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
    redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class RedisResults(RedisBackend):
    expires: int | None
    # No public builder of a result's meta (with the extended fields); Celery's backends use this.
    _get_result_meta: Callable[..., dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started: dict[str, Future[None]] = {}
        self._started_lock = threading.Lock()
        self._set_unless_succeeded = self.client.register_script(SET_UNLESS_SUCCEEDED)
        self._pipelined: WriterThread[tuple[str, Any, int], None] | None = None

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Do not subscribe at submit time; `get()` subscribes on demand."""

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        if state == states.STARTED and _grouped.settle is not None:
            encoded = self.encode_result(result, state)
            key_value = self._encoded(task_id, encoded, state, traceback, request)
            self._writer().submit(key_value).add_done_callback(_log_lost_started)
            return result
        if state == states.STARTED:
            self._store_started_later(task_id, result, traceback, request, kwargs)
            return result
        self._settle_started(task_id)
        return super().store_result(task_id, result, state, traceback, request, **kwargs)

    # The write has no public hook: Celery's own key-value backends override this method too.
    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Celery's key-value `_store_result`, with its read and write in one script; on
        the asyncio pool, pipelined with other runs' by a writer thread."""
        key, value, expires = self._encoded(task_id, result, state, traceback, request)
        if (settle := _grouped.settle) is not None:
            settle(self._writer().submit((key, value, expires)))
        else:
            self.ensure(self._set_unless_succeeded, ([key], [value, expires]))
        return result

    def _encoded(
        self, task_id: str, result: Any, state: str, traceback: Any, request: Any
    ) -> tuple[str, Any, int]:
        """The key, value and expiry (seconds, 0 for none) of a state to store."""
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if len(value) > REDIS_MAX_VALUE_SIZE:
            raise BackendStoreError(  # type: ignore[call-arg]
                "value too large for Redis backend", state=state, task_id=task_id
            )
        expires = self.expires
        if state == states.FAILURE:
            expires = getattr(self, "failure_expires", expires)
        return self.get_key_for_task(task_id), value, int(expires or 0)

    def _writer(self) -> WriterThread[tuple[str, Any, int], None]:
        """This backend's writer thread (Celery keeps a backend per thread), made on first use."""
        if self._pipelined is None:
            self._pipelined = WriterThread("conveyor-results", self._pipe)
        return self._pipelined

    def _pipe(self, writes: list[tuple[str, Any, int]]) -> list[None]:
        """Many runs' states in one pipelined round trip, retried as Celery retries one.
        EVALSHA, not the script object: redis-py would ask SCRIPT EXISTS first, a round trip
        more per batch. A server that lost the script (restarted, flushed) has it loaded
        again and the batch is retried (the script only sets, so a write repeated is the
        same write)."""

        script = self._set_unless_succeeded

        def pipelined() -> None:
            pipe = self.client.pipeline(transaction=False)
            for key, value, expires in writes:
                pipe.evalsha(script.sha, 1, key, value, expires)
            pipe.execute()

        def send() -> None:
            try:
                pipelined()
            except NoScriptError:
                self.client.script_load(script.script)
                pipelined()

        self.ensure(send, ())
        return [None] * len(writes)

    def _store_started_later(
        self, task_id: str, result: Any, traceback: Any, request: Any, kwargs: dict[str, Any]
    ) -> None:
        def write() -> None:
            try:
                super(RedisResults, self).store_result(
                    task_id, result, states.STARTED, traceback, request, **kwargs
                )
            except Exception:
                log.warning("could not store the STARTED state of %s", task_id, exc_info=True)

        with self._started_lock:
            future = background_writer().submit(write)
            self._started[task_id] = future
        future.add_done_callback(lambda done: self._forget_started(task_id, done))

    def _forget_started(self, task_id: str, done: Future[None]) -> None:
        with self._started_lock:
            if self._started.get(task_id) is done:
                del self._started[task_id]

    def _settle_started(self, task_id: str) -> None:
        """Drop a STARTED write not yet begun, or wait for the one in flight."""
        with self._started_lock:
            future = self._started.pop(task_id, None)
        if future is not None and not future.cancel():
            future.result()


class _Grouped:
    """Set on the asyncio pool's worker (`write_results_in_groups`)."""

    settle: Settle | None = None


_grouped = _Grouped()


def write_results_in_groups(settle: Settle) -> None:
    """From now on this process's Redis result writes go through a writer thread, pipelined
    across runs, and each run waits for its own with `settle` (the asyncio pool's runs then
    wait without blocking the event loop). STARTED is queued without waiting: the same
    thread writes it before any later state of the run."""
    _grouped.settle = settle


def _log_lost_started(done: Future[None]) -> None:
    if (error := done.exception()) is not None:
        log.warning("could not store a STARTED state: %s", error)


class RPCResults(RPCBackend):
    app: Any

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Declare the reply queue as Celery does, retrying only as long as a publish."""
        if not task_join_will_block():
            policy = self.app.conf.task_publish_retry_policy or {}
            maybe_declare(self.binding(producer.channel), retry=True, **policy)
