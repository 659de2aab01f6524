"""Task and worker series fed from Celery events, which every pool kind sends (prefork too).

One receiver thread per exporter: task counts by state, run duration, queue wait (from the
enqueue time conveyor's workers add to task-started), live workers with their busy slots
from heartbeats, the runs workers hold until an ETA (RabbitMQ's `delayed`), and the
event-loop stalls asyncio workers report (`worker-loop-stall`). No pod or
hostname label: the pool comes from the node name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from celery.events.state import State
from prometheus_client import CollectorRegistry, Counter, Histogram

from conveyor.celery_app import ConveyorApp
from conveyor.metrics.queues import epoch
from conveyor.workers.aio_pool import STALL_EVENT
from conveyor.workers.inspect import pool_of

log = logging.getLogger(__name__)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
STATES = {
    "task-received": "received",
    "task-started": "started",
    "task-succeeded": "succeeded",
    "task-failed": "failed",
    "task-retried": "retried",
    "task-rejected": "rejected",
    "task-revoked": "revoked",
}
KNOWN_TASKS = 50_000


class TaskEvents:
    """Celery events turned into Prometheus series and a live view of workers."""

    def __init__(self, app: ConveyorApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.state: Any = State(max_tasks_in_memory=1, max_workers_in_memory=5000)
        self.last_event_at: float | None = None
        self._names: OrderedDict[str, str] = OrderedDict()
        self._held: OrderedDict[str, tuple[str, float]] = OrderedDict()
        """Runs a worker received with a future ETA and has not started: (node, ETA)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._receiver: Any = None
        self.tasks = Counter(
            "conveyor_tasks",
            "Task state changes seen in Celery events.",
            ["agent", "pool", "state"],
            registry=registry,
        )
        self.duration = Histogram(
            "conveyor_task_duration_seconds",
            "Run time of finished tasks (succeeded or failed).",
            ["agent", "pool"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "conveyor_task_queue_wait_seconds",
            "From enqueue to start.",
            ["agent", "pool"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.loop_stalls = Counter(
            "conveyor_event_loop_stalls",
            "Event-loop stalls an asyncio worker noticed (a blocking call in async code).",
            ["pool"],
            registry=registry,
        )
        self.loop_stall_seconds = Histogram(
            "conveyor_event_loop_stall_seconds",
            "How long each event-loop stall of an asyncio worker lasted.",
            ["pool"],
            buckets=BUCKETS,
            registry=registry,
        )

    def handle(self, event: dict[str, Any]) -> None:
        """Account for one event (public so tests and replays can feed events directly)."""
        with self._lock:
            self.last_event_at = time.time()
            kind = event.get("type", "")
            if kind == STALL_EVENT:
                self._loop_stall(event)
                return
            if kind.startswith("worker-"):
                self.state.event(event)
                return
            state = STATES.get(kind)
            if state is None:
                return
            uuid = str(event.get("uuid", ""))
            agent = str(event.get("name") or self._names.get(uuid) or "unknown")
            if event.get("name"):
                self._names[uuid] = agent
                while len(self._names) > KNOWN_TASKS:
                    self._names.popitem(last=False)
            node = str(event.get("hostname", ""))
            pool = pool_of(node)
            self.tasks.labels(agent, pool, state).inc()
            self._track_eta(kind, uuid, node, event)
            if kind in ("task-succeeded", "task-failed") and event.get("runtime") is not None:
                self.duration.labels(agent, pool).observe(float(event["runtime"]))
            if kind == "task-started":
                enqueued = epoch(event.get("enqueued_at"))
                started = epoch(event.get("timestamp"))
                if enqueued is not None and started is not None:
                    self.queue_wait.labels(agent, pool).observe(max(0.0, started - enqueued))
            if kind in ("task-succeeded", "task-failed", "task-rejected", "task-revoked"):
                self._names.pop(uuid, None)

    def _loop_stall(self, event: dict[str, Any]) -> None:
        """A worker-loop-stall event: sent once when a stall is noticed, once when it ends."""
        pool = pool_of(str(event.get("hostname", "")))
        if not event.get("ended"):
            self.loop_stalls.labels(pool).inc()
        elif isinstance(event.get("seconds"), int | float):
            self.loop_stall_seconds.labels(pool).observe(float(event["seconds"]))

    def _track_eta(self, kind: str, uuid: str, node: str, event: dict[str, Any]) -> None:
        """A run received with a future ETA is held, unacknowledged, until then (a revoked one
        too: Celery drops it when its ETA comes), unless its worker dies first."""
        eta = epoch(event.get("eta"))
        if kind == "task-received" and eta is not None and eta > time.time():
            self._held[uuid] = (node, eta)
            while len(self._held) > KNOWN_TASKS:
                self._held.popitem(last=False)

    def delayed(self) -> dict[str, int]:
        """Runs held by live workers until a future ETA, per pool. RabbitMQ counts them as
        unacknowledged like any other; Redis tells them apart itself (their `eta` header)."""
        now, out = time.time(), dict[str, int]()
        with self._lock:
            for uuid, (node, eta) in list(self._held.items()):
                worker = self.state.workers.get(node)
                if eta <= now or (worker is not None and not worker.alive):
                    del self._held[uuid]
                    continue
                pool = pool_of(node)
                out[pool] = out.get(pool, 0) + 1
        return out

    def workers(self) -> dict[str, tuple[int, int]]:
        """(live workers, busy slots) per pool, from heartbeats."""
        out: dict[str, tuple[int, int]] = {}
        with self._lock:
            for worker in self.state.workers.values():
                if not worker.alive:
                    continue
                pool = pool_of(worker.hostname)
                count, busy = out.get(pool, (0, 0))
                out[pool] = (count + 1, busy + int(worker.active or 0))
        return out

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="conveyor-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        """Receive events until stopped, reconnecting after broker errors."""
        while not self._stop.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    self._receiver = self.app.events.Receiver(conn, handlers={"*": self.handle})
                    self._receiver.should_stop = self._stop.is_set()
                    for _ in self._receiver.consume(limit=None, timeout=None, wakeup=True):
                        pass
            except Exception as exc:
                log.warning("event receiver: %s; reconnecting", exc)
                self._stop.wait(1.0)
