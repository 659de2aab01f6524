"""`conveyor exporter`: /metrics for Prometheus, /scale/<pool> for KEDA, /healthz for probes.

Queue series are read from the broker at scrape time (cached ~1 s, never a worker broadcast);
task and worker series come from Celery events. Read-only: nothing here changes state.
"""

from __future__ import annotations

import gzip
import hmac
import json
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, gzip_accepted
from prometheus_client.registry import Collector

from conveyor.celery_app import ConveyorApp
from conveyor.metrics.beat import BEAT_TTL, BeatCollector
from conveyor.metrics.deadletters import DLQ_TTL, DeadLetterCollector
from conveyor.metrics.events import TaskEvents
from conveyor.metrics.queues import QueueReader, QueueState
from conveyor.metrics.scaling import ScaleDecision, desired_replicas
from conveyor.metrics.text import Gauges, render

Environ = dict[str, Any]
GZIP_LEVEL = 1
"""The text compresses ~10x at level 1 already; higher levels cost a millisecond per scrape."""
StartResponse = Callable[..., Any]


class PoolView:
    """Queue state, live workers and desired replicas of every pool, from one reading;
    `workers` gives (live workers, busy slots) per pool, `delayed` the runs workers hold until
    an ETA per pool (from events), which on RabbitMQ move from reserved to delayed."""

    def __init__(
        self,
        app: ConveyorApp,
        reader: QueueReader,
        workers: Callable[[], dict[str, tuple[int, int]]] = dict,
        delayed: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.app, self.reader, self.workers, self.delayed = app, reader, workers, delayed

    def read(self) -> tuple[list[QueueState], dict[str, tuple[int, int]], list[ScaleDecision]]:
        states, workers = self.reader.read(), self.workers()
        if self.delayed is not None and not self.app.uses_redis:
            states = with_delayed(self.app, states, self.delayed())
        decisions = [
            desired_replicas(pool, states, workers.get(name, (0, 0))[0])
            for name, pool in sorted(self.app.settings.pools.items())
        ]
        return states, workers, decisions


def with_delayed(
    app: ConveyorApp, states: list[QueueState], delayed: dict[str, int]
) -> list[QueueState]:
    """RabbitMQ states with each pool's held ETA runs moved from reserved to delayed, on the
    pool's own queue (events do not say which of its queues a run came from)."""
    prefix = app.settings.queue_prefix
    out = []
    for state in states:
        held = (
            delayed.get(state.pool, 0)
            if state.queue == app.settings.pool(state.pool).queue(prefix)
            else 0
        )
        out.append(
            state.model_copy(update={"delayed": held, "reserved": max(0, state.reserved - held)})
        )
    return out


class QueueCollector(Collector):
    """The queue and pool gauges, computed on each scrape from a PoolView."""

    def __init__(self, view: PoolView) -> None:
        self.view = view

    def collect(self) -> Iterable[Metric]:
        return [family.metric() for family in self.families()]

    def render(self) -> str:
        """The gauges as exposition text, without prometheus_client's per-sample escaping."""
        return render(self.families())

    def families(self) -> list[Gauges]:
        states, workers, decisions = self.view.read()
        by_queue = ("queue", "pool")
        gauges = {
            "ready": Gauges("conveyor_queue_ready", "Ready messages, all priorities.", by_queue),
            "reserved": Gauges(
                "conveyor_queue_reserved",
                "Delivered, not yet acknowledged (prefetched or running).",
                by_queue,
            ),
            "delayed": Gauges(
                "conveyor_queue_delayed", "Held by workers until their ETA or countdown.", by_queue
            ),
            "oldest_age_seconds": Gauges(
                "conveyor_queue_oldest_age_seconds", "Age of the oldest ready message.", by_queue
            ),
        }
        for s in states:
            for name, gauge in gauges.items():
                gauge.add((s.queue, s.pool), float(getattr(s, name)))
        by_pool = ("pool",)
        count = Gauges("conveyor_pool_workers", "Live workers.", by_pool)
        busy = Gauges(
            "conveyor_pool_busy_ratio",
            "Busy slots over all slots (on an asyncio pool: runs in flight over its concurrency).",
            by_pool,
        )
        desired = Gauges("conveyor_pool_desired_replicas", "Workers the pool should run.", by_pool)
        drain = Gauges(
            "conveyor_pool_target_drain_seconds",
            "The pool's target for the oldest message's age (alerts compare against it).",
            by_pool,
        )
        for d in decisions:
            live, active = workers.get(d.pool, (0, 0))
            slots = live * d.inputs.concurrency
            count.add((d.pool,), float(live))
            busy.add((d.pool,), active / slots if slots else 0.0)
            desired.add((d.pool,), float(d.desired_replicas))
            drain.add((d.pool,), d.inputs.target_drain_seconds)
        source = Gauges(
            "conveyor_queue_source_info",
            "Where queue counts come from (redis, amqp-passive-declare, amqp-management-api).",
            ("source",),
        )
        for name in sorted({s.reserved_source for s in states}):
            source.add((name,), 1.0)
        return [*gauges.values(), count, busy, desired, drain, source]


def _json(start: StartResponse, status: str, body: Any) -> list[bytes]:
    data = json.dumps(body, indent=2).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


class Exporter:
    """The exporter's WSGI app and its event feed."""

    def __init__(self, app: ConveyorApp, *, events: bool = True, ttl: float = 1.0) -> None:
        self.app = app
        self._others = CollectorRegistry()
        """Everything but the queue and pool gauges, rendered by prometheus_client."""
        self.events = TaskEvents(app, self._others) if events else None
        self.reader = QueueReader(app, ttl=ttl)
        self.view = (
            PoolView(app, self.reader, self.events.workers, self.events.delayed)
            if self.events
            else PoolView(app, self.reader)
        )
        self.queues = QueueCollector(self.view)
        self._others.register(BeatCollector(app.settings, ttl=max(ttl, BEAT_TTL)))
        self._others.register(DeadLetterCollector(app.settings, ttl=max(ttl, DLQ_TTL)))
        self.registry = CollectorRegistry()
        """Every series the exporter serves."""
        self.registry.register(self.queues)
        self.registry.register(self._others)
        self._rendered: dict[bool, tuple[float, list[tuple[str, str]], bytes]] = {}
        self._render_lock = threading.Lock()
        self.token = app.settings.exporter_token

    def _authorised(self, environ: Environ) -> bool:
        if not self.token:
            return True
        given = environ.get("HTTP_AUTHORIZATION", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    def __call__(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _json(start, "405 Method Not Allowed", {"error": "read-only: use GET"})
        if path == "/healthz":
            return self.health(start)
        if not self._authorised(environ):
            return _json(start, "401 Unauthorized", {"error": "bearer token required"})
        if path == "/metrics":
            return self.metrics(environ, start)
        if path.startswith("/scale/"):
            return self.scale(path.removeprefix("/scale/"), start)
        return _json(start, "404 Not Found", {"error": f"no such path {path}; try /metrics"})

    def metrics(self, environ: Environ, start: StartResponse) -> list[bytes]:
        """The Prometheus text format 0.0.4 (cheaper to render than OpenMetrics, which adds
        nothing here), the response reused for `ttl` seconds like the broker reading."""
        gzipped = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
        with self._render_lock:
            cached = self._rendered.get(gzipped)
            if cached is None or time.monotonic() - cached[0] >= self.reader.ttl:
                body = self.queues.render().encode() + generate_latest(self._others)
                headers = [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)]
                if gzipped:
                    body = gzip.compress(body, compresslevel=GZIP_LEVEL)
                    headers.append(("Content-Encoding", "gzip"))
                headers.append(("Content-Length", str(len(body))))
                cached = (time.monotonic(), headers, body)
                self._rendered[gzipped] = cached
        start("200 OK", cached[1])
        return [cached[2]]

    def scale(self, pool: str, start: StartResponse) -> list[bytes]:
        """KEDA metrics-api JSON for one pool: read `desired_replicas` (valueLocation)."""
        if pool not in self.app.settings.pools:
            known = ", ".join(sorted(self.app.settings.pools))
            return _json(
                start, "404 Not Found", {"error": f"unknown pool {pool!r}; pools: {known}"}
            )
        states, _, decisions = self.view.read()
        decision = next(d for d in decisions if d.pool == pool)
        return _json(start, "200 OK", scale_document(decision, states))

    def health(self, start: StartResponse) -> list[bytes]:
        last = self.events.last_event_at if self.events is not None else None
        ago = round(time.time() - last, 3) if last is not None else None
        try:
            self.reader.read(fresh=True)
        except Exception as exc:
            body = {"broker": f"unreachable: {exc}", "last_event_seconds_ago": ago}
            return _json(start, "503 Service Unavailable", body)
        return _json(start, "200 OK", {"broker": "ok", "last_event_seconds_ago": ago})

    def start(self) -> None:
        if self.events is not None:
            self.events.start()

    def close(self) -> None:
        if self.events is not None:
            self.events.stop()
        self.reader.close()


def scale_document(decision: ScaleDecision, states: Sequence[QueueState]) -> dict[str, Any]:
    """The flat JSON KEDA reads, with the inputs behind the number and where they came from."""
    i = decision.inputs
    sources = sorted({s.reserved_source for s in states if s.pool == decision.pool})
    return {
        "pool": decision.pool,
        "queues": decision.queues,
        "ready": i.ready,
        "reserved": i.reserved,
        "delayed": i.delayed,
        "oldest_age_seconds": round(i.oldest_age_seconds, 3),
        "workers": i.workers,
        "concurrency": i.concurrency,
        "desired_replicas": decision.desired_replicas,
        "inputs": {**i.model_dump(), "by_backlog": decision.by_backlog, "by_age": decision.by_age},
        "source": sources[0] if len(sources) == 1 else sources,
    }


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


@contextmanager
def serve(exporter: Exporter, host: str, port: int) -> Iterator[WSGIServer]:
    """Run the exporter's HTTP server in a thread; yields the server until closed."""
    server = make_server(host, port, exporter, _ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="conveyor-exporter", daemon=True)
    exporter.start()
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        exporter.close()
