"""conveyor's asyncio pool for benchmarks/concurrency.py: one scratch database and broker
db, `conveyor worker --pool io` subprocesses (kind asyncio), drains timed by the polls of
_procs.watch_drain, runs in flight from the rows and from the pool's busy-slot gauge (its
`inspect stats` "in-flight"), and the worker's RSS."""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from benchmarks import _harness as h
from benchmarks import _procs as p

WAIT, NOOP = "bench.wait", "bench.noop"
FINAL = "('succeeded', 'failed', 'rejected', 'cancelled')"
COUNT_SQL = f"SELECT count(*) FROM agent_runs WHERE status IN {FINAL}"  # noqa: S608
ROWS_SQL = (
    "SELECT status, extract(epoch FROM started_at), extract(epoch FROM finished_at) FROM agent_runs"
)


def pools(concurrency: int, default_asyncio: bool = False) -> dict[str, Any]:
    """CONVEYOR_POOLS: the io pool at `concurrency`, and the default pool as kind asyncio
    too with `default_asyncio` (so conveyor.ping runs on an asyncio pool)."""
    out: dict[str, Any] = {"io": {"kind": "asyncio", "concurrency": concurrency}}
    if default_asyncio:
        out["default"] = {"kind": "asyncio", "concurrency": concurrency}
    return out


class Conveyor:
    """conveyor's side: its scratch database, its broker db, an app for clients."""

    def __init__(self, args: argparse.Namespace, db: str, broker: str) -> None:
        from conveyor.app import create_app
        from conveyor.config import load_settings
        from conveyor.models.migrate import upgrade

        self.args, self.broker = args, broker
        self.admin_url, self.url = h.pg_url(db), h.pg_url(db, "postgresql+psycopg")
        upgrade(self.url)
        self.prefix = h.unique("conc") + "."
        settings = load_settings(
            broker_url=broker, database_url=self.url, queue_prefix=self.prefix,
            pools=pools(1000, default_asyncio=True), agent_modules=[h.BENCH_AGENTS],
        )  # fmt: skip
        self.app = create_app(settings)
        self.conn = psycopg.connect(self.admin_url, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def reset(self) -> None:
        h.flush_redis(self.broker)
        self.conn.execute("TRUNCATE agent_runs")

    def count(self) -> int:
        return int(self.conn.execute(COUNT_SQL).fetchone()[0])  # type: ignore[index]

    def fill(self, agent: str, payloads: list[dict[str, Any]]) -> float:
        """Submit the runs with a client of their own, closed at once: a client that
        listens and reads nothing would hold its backend (see the README). Seconds taken."""
        from conveyor.client import Client

        t0 = time.monotonic()
        client = Client(self.app)
        try:
            client.submit_many(agent, payloads)
        finally:
            client.close()
        return time.monotonic() - t0

    def start(self, workers: h.Workers, label: str, concurrency: int, pool: str = "io") -> Any:
        env = h.conveyor_env(self.broker, self.url, self.prefix, "asyncio", concurrency)
        env["CONVEYOR_POOLS"] = json.dumps(pools(concurrency, default_asyncio=pool == "default"))
        argv = h.conveyor_worker_argv(concurrency, self.args.loglevel)
        argv[argv.index("default")] = pool
        worker = workers.start(label, argv, env)
        worker.epoch = time.time() - (time.monotonic() - worker.started_at)  # type: ignore[attr-defined]
        return worker

    def rows(self) -> dict[str, Any]:
        """What the rows say: statuses, peak in flight, first start -> last finish."""
        rows = self.conn.execute(ROWS_SQL).fetchall()
        statuses: dict[str, int] = {}
        for status, _, _ in rows:
            statuses[status] = statuses.get(status, 0) + 1
        spans = [(float(s), float(f)) for _, s, f in rows if s is not None and f is not None]
        finishes = sorted(f for _, f in spans)
        return {
            "statuses": statuses,
            "peak_in_flight_rows": p.peak_overlap(spans),
            "first_start_epoch": min((s for s, _ in spans), default=None),
            "last_finish_epoch": finishes[-1] if finishes else None,
            "finish_span_s": finishes[-1] - finishes[0] if len(finishes) > 1 else 0.0,
        }

    def drain(
        self, workers: h.Workers, label: str, agent: str, payloads: list[dict[str, Any]],
        concurrency: int,
    ) -> dict[str, Any]:  # fmt: skip
        """Fill the queue, start one worker, time its drain, read the rows, stop it."""
        n = len(payloads)
        self.reset()
        p.progress(f"{label}: queueing {n}")
        fill_s = self.fill(agent, payloads)
        worker = self.start(workers, label.replace(" ", "-"), concurrency)
        gauge = Gauge(self.app, self.args.gauge_interval)
        try:
            with gauge.running():
                result = p.watch_drain(
                    label, self.count, worker, n, self.args.poll, self.args.timeout
                )
            rows = self.rows()
        finally:
            workers.stop(worker)
        last = rows.pop("last_finish_epoch")
        first = rows.pop("first_start_epoch")
        span = rows["finish_span_s"]
        return {
            "side": "conveyor",
            "agent": agent,
            "concurrency": concurrency,
            "fill_s": fill_s,
            **result,
            **rows,
            "succeeded": rows["statuses"].get("succeeded", 0),
            "all_succeeded": rows["statuses"] == {"succeeded": n},
            "wall_rows_s": (last - worker.epoch) if last else None,
            "first_start_to_last_finish_s": (last - first) if last and first else None,
            "steady_per_s": (n - 1) / span if span > 0 else float("nan"),
            **gauge.summary(),
        }

    def rss(self, workers: h.Workers, n: int, seconds: float, warmup: int) -> dict[str, Any]:
        """Idle RSS of a started, warmed-up worker, then RSS and runs in flight sampled
        while `n` runs await `seconds`: (RSS at the most runs in flight - idle) / runs."""
        self.reset()
        worker = self.start(workers, "rss", max(n, 1))
        pid = worker.proc.pid
        try:
            self.fill(NOOP, [{"i": -i} for i in range(1, warmup + 1)])
            p.watch_drain("rss warm-up", self.count, worker, warmup, 0.1, self.args.timeout)
            time.sleep(1.0)
            idle = []
            for _ in range(5):
                idle.append(p.rss_kb(pid))
                time.sleep(0.2)
            idle_kb = statistics.median(idle)
            p.progress(f"rss: idle {idle_kb / 1024:.1f} MiB; queueing {n} waits of {seconds:g}s")
            payloads = [{"seconds": seconds, "i": i} for i in range(n)]
            fill_s = self.fill(WAIT, payloads)
            samples = []
            gauge = Gauge(self.app, self.args.gauge_interval)
            with gauge.running():
                while True:
                    started = int(
                        self.conn.execute(
                            "SELECT count(*) FROM agent_runs WHERE status = 'started'"
                        ).fetchone()[0]  # type: ignore[index]
                    )
                    samples.append((started, p.rss_kb(pid), time.monotonic()))
                    if self.count() >= warmup + n:
                        break
                    worker.check_alive()
                    if time.monotonic() - worker.started_at > self.args.timeout:
                        raise RuntimeError(f"rss: runs not done\n{worker.log_tail()}")
                    time.sleep(0.25)
            rows = self.rows()
        finally:
            workers.stop(worker)
        peak = max(samples, key=lambda s: (s[0], s[1]))
        in_flight, rss_at_peak = peak[0], peak[1]
        return {
            "n": n,
            "seconds": seconds,
            "fill_s": fill_s,
            "idle_rss_kb": idle_kb,
            "rss_at_peak_kb": rss_at_peak,
            "max_rss_kb": max(s[1] for s in samples),
            "in_flight_at_peak": in_flight,
            "kb_per_run": (rss_at_peak - idle_kb) / in_flight if in_flight else float("nan"),
            "samples": len(samples),
            **rows,
            **gauge.summary(),
        }


class Gauge:
    """Samples the pool's busy slots (`inspect stats` -> pool -> "in-flight") every
    `interval` s on a thread, while a drain runs; interval 0 skips it."""

    def __init__(self, app: Any, interval: float) -> None:
        self.app, self.interval = app, interval
        self.samples: list[int] = []
        self.failures = 0
        self._stop = threading.Event()

    @contextlib.contextmanager
    def running(self) -> Iterator[Gauge]:
        if self.interval <= 0:
            yield self
            return
        thread = threading.Thread(target=self._sample, name="gauge", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(10)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                replies = self.app.control.inspect(timeout=2.0, limit=1).stats() or {}
            except Exception:  # a missed sample, not a failed benchmark
                replies = {}
            got = [r.get("pool", {}).get("in-flight") for r in replies.values()]
            if got and got[0] is not None:
                self.samples.append(int(got[0]))
            else:
                self.failures += 1

    def summary(self) -> dict[str, Any]:
        if self.interval <= 0:
            return {"peak_in_flight_gauge": None, "gauge_note": "skipped (--gauge-interval 0)"}
        return {
            "peak_in_flight_gauge": max(self.samples) if self.samples else None,
            "gauge_note": f"{len(self.samples)} samples, {self.failures} unanswered",
        }
