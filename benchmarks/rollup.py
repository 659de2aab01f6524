"""Analytics rollup: full rebuild and incremental minute versus a plain GROUP BY, same run.

One invocation: a scratch database (`bench_rollup_…`, dropped at the end), migrated with
conveyor.models.migrate.upgrade(), then --count runs (default 1 000 000) COPYed into
agent_runs, then VACUUM ANALYZE. The runs finish over the --days (7) before T0 = half past
the previous hour (~100 runs a minute for 1M), with a mild 24 h cycle; --agents (20) agents
with Zipf-like weights, each in one of the 4 built-in pools with its own lognormal duration
(median 20 ms .. 20 s); queue waits lognormal (median ~0.15 s, long tail); 93 % succeeded,
4 % failed, 2 % rejected, 1 % cancelled (half of those before starting), some retries; and
0.2 % unfinished (queued/started/retrying, finished_at NULL). updated_at = finished_at plus a
few ms, as the worker writes the final row. Seeded (--seed): every invocation loads the same
rows, shifted by whole hours.

Whole table, --repeat (5) rounds after one untimed warm-up rollup, the order of the four
methods rotating each round:
  group_by              SELECT date_trunc('minute', finished_at), agent, pool, count(*),
                        count(*) FILTER (status = ...) x4, sum(greatest(attempts - 1, 0))
                        FROM agent_runs WHERE finished_at IS NOT NULL AND status IN (final)
                        GROUP BY 1, 2, 3, fetched to the client (psycopg): the baseline
  group_by_percentiles  the same plus rollup.py's five percentile_cont aggregates
  full_rebuild          rollup(engine, full=True) after an untimed
                        TRUNCATE run_rollups, analytics_watermarks: every row is written
  full_rewrite          rollup(engine, full=True) over an up-to-date run_rollups: the same
                        work, no row changes, so nothing is rewritten
run_rollups is ANALYZEd once after the warm-up (and again before the incremental part), as
autovacuum would within a minute of a first rebuild; --no-analyze skips those two ANALYZEs, but
rollup() itself ANALYZEs run_rollups after every full rebuild, so the table has statistics
either way. Target: full_rebuild <= 5 s (median).

Incremental, after the above (run_rollups complete, watermark set): --minutes (10) timed
rounds after one untimed one. Round k writes the runs of minute M_k = T0 + k minutes:
round(count / (days * 1440)) runs finishing in M_k plus --late (3) runs finishing in random
old minutes of the loaded window, all with updated_at inside M_k (COPY, untimed), then times
  incremental_minute    rollup(engine): CHANGED_MINUTES since the watermark (less rollup's
                        60 s OVERLAP, so the previous round's runs are read again, as with a
                        beat every minute), MINUTES for those minutes, HOURS for their hours
  group_by_minute       the group_by query restricted to M_k's runs (finished_at in M_k)
  group_by_minute_pct   the same with the percentiles
(the three in rotating order). --clock now stamps updated_at with now() instead of inside
M_k: the rounds are then seconds apart, so each rollup re-reads every round of the last 60 s.
Target: incremental_minute <= 100 ms (median).

Ratios are against group_by (whole table) and group_by_minute (one minute), medians.
--pg-options passes libpq options (e.g. '-c jit=off -c work_mem=64MB') to every connection,
rollup's and the baselines', to try server settings without touching conveyor/.
--explain prints EXPLAIN (ANALYZE, BUFFERS) of rollup.py's statements (full and
incremental, each inside a rolled-back transaction) to stderr at the end.

Run from the repository root:  .venv/bin/python -m benchmarks.rollup
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import psycopg

from benchmarks import _harness as h

TARGET_FULL_S = 5.0
TARGET_INCREMENTAL_MS = 100.0
MAX_MINUTES = 28
COLUMNS = (
    "id, agent, pool, status, attempts, error_type, enqueued_at, started_at, finished_at, "
    "updated_at"
)
COPY_SQL = f"COPY agent_runs ({COLUMNS}) FROM STDIN"
FINAL = "('succeeded','failed','rejected','cancelled')"
_FIGURES = """
    count(*) AS runs,
    count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'rejected') AS rejected,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
    coalesce(sum(greatest(attempts - 1, 0)), 0) AS retries"""
_DURATION = "extract(epoch FROM finished_at - started_at)"
_WAIT = "extract(epoch FROM started_at - enqueued_at)"
_STARTED = "FILTER (WHERE started_at IS NOT NULL)"
_WAITED = "FILTER (WHERE started_at IS NOT NULL AND enqueued_at IS NOT NULL)"
_PERCENTILES = f""",
    percentile_cont(0.5) WITHIN GROUP (ORDER BY {_DURATION}) {_STARTED},
    percentile_cont(0.95) WITHIN GROUP (ORDER BY {_DURATION}) {_STARTED},
    percentile_cont(0.99) WITHIN GROUP (ORDER BY {_DURATION}) {_STARTED},
    percentile_cont(0.5) WITHIN GROUP (ORDER BY {_WAIT}) {_WAITED},
    percentile_cont(0.95) WITHIN GROUP (ORDER BY {_WAIT}) {_WAITED}"""


def group_by_sql(percentiles: bool, minute: bool) -> str:
    where = "finished_at IS NOT NULL" if not minute else (
        "finished_at >= %(m)s AND finished_at < %(m)s + interval '1 minute'"
    )  # fmt: skip
    return (
        f"SELECT date_trunc('minute', finished_at), agent, pool, {_FIGURES}"  # noqa: S608
        f"{_PERCENTILES if percentiles else ''} FROM agent_runs "
        f"WHERE {where} AND status IN {FINAL} GROUP BY 1, 2, 3"
    )


# --- the data ---------------------------------------------------------------------------------

POOLS = ["default", "memory", "vector", "analytics"]
AGENT_NAMES = [
    "summarize", "classify", "extract", "translate", "chat", "plan", "route", "moderate",
    "remember", "recall", "forget", "embed", "search", "rerank", "index", "rollup",
    "report", "forecast", "score", "digest", "tag", "dedupe", "enrich", "audit",
]  # fmt: skip
STATUSES = np.array(["succeeded", "failed", "rejected", "cancelled"])
STATUS_P = [0.93, 0.04, 0.02, 0.01]
ERRORS = np.array(
    ["TimeoutError", "ConnectionError", "ValueError", "TimeLimitExceeded", "KeyError"]
)
UNFINISHED = np.array(["queued", "started", "retrying"])
UNFINISHED_SHARE = 0.002


class Population:
    """Agents, their pools, weights and latency profiles; draws runs with numpy."""

    def __init__(self, agents: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        names = [AGENT_NAMES[i] if i < len(AGENT_NAMES) else f"agent{i:03d}" for i in range(agents)]
        self.agents = np.array(names)
        self.pools = np.array([POOLS[0 if i % 5 < 2 else i % 5 - 1] for i in range(agents)])
        weights = 1.0 / np.arange(1, agents + 1) ** 0.8
        self.weights = weights / weights.sum()
        self.median_s = np.exp(rng.uniform(np.log(0.02), np.log(20.0), agents))
        self.sigma = rng.uniform(0.4, 1.0, agents)
        self.wait_scale = np.array(
            [{"default": 1.0, "memory": 0.5}.get(p, 2.0) for p in self.pools]
        )

    def draw(
        self,
        rng: np.random.Generator,
        finished_us: np.ndarray,
        updated_us: np.ndarray | None = None,
        unfinished_share: float = 0.0,
    ) -> list[str]:
        """COPY text lines for runs finishing at `finished_us` (µs since the epoch)."""
        n = len(finished_us)
        agent = rng.choice(len(self.agents), n, p=self.weights)
        status = rng.choice(len(STATUSES), n, p=STATUS_P)
        duration = np.exp(np.log(self.median_s[agent]) + self.sigma[agent] * rng.standard_normal(n))
        duration = np.where(status == 2, rng.uniform(0.001, 0.01, n), duration)  # rejected
        wait = 0.15 * self.wait_scale[agent] * np.exp(1.2 * rng.standard_normal(n))
        attempts = np.where(rng.random(n) < 0.05, rng.integers(2, 4, n), 1)
        attempts = np.where(status == 1, rng.integers(1, 5, n), attempts)  # failed
        attempts = np.where(status == 2, 1, attempts)
        not_started = (status == 3) & (rng.random(n) < 0.5)  # cancelled while queued
        attempts = np.where(not_started, 0, attempts)
        started_us = finished_us - (duration * 1e6).astype(np.int64)
        enqueued_us = np.where(not_started, finished_us, started_us) - (wait * 1e6).astype(np.int64)
        if updated_us is None:
            updated_us = finished_us + rng.integers(1_000, 50_000, n)
        error = np.where(
            status == 1,
            ERRORS[rng.integers(0, len(ERRORS), n)],
            np.where(status == 2, "ValidationError", np.where(status == 3, "Cancelled", "")),
        )
        unfinished = rng.random(n) < unfinished_share
        status_text = np.where(
            unfinished, UNFINISHED[rng.integers(0, len(UNFINISHED), n)], STATUSES[status]
        )
        error = np.where(unfinished, "", error)
        ids = rng.integers(0, 2**63, (n, 2), dtype=np.int64)
        started = _stamps(started_us, not_started | (unfinished & (status_text == "queued")))
        enqueued, finished = _stamps(enqueued_us), _stamps(finished_us, unfinished)
        updated = _stamps(np.where(unfinished, enqueued_us, updated_us))
        lines = []
        for i in range(n):
            hi, lo = ids[i]
            hx = f"{hi:016x}{lo:016x}"
            lines.append(
                f"{hx[:8]}-{hx[8:12]}-4{hx[13:16]}-{hx[16:20]}-{hx[20:]}\t"
                f"{self.agents[agent[i]]}\t{self.pools[agent[i]]}\t{status_text[i]}\t"
                f"{attempts[i]}\t{error[i] or chr(92) + 'N'}\t{enqueued[i]}\t{started[i]}\t"
                f"{finished[i]}\t{updated[i]}\n"
            )
        return lines


def _stamps(us: np.ndarray, null: np.ndarray | None = None) -> np.ndarray:
    text = np.char.add(np.datetime_as_string(us.astype("datetime64[us]"), unit="us"), "+00")
    return text if null is None else np.where(null, "\\N", text)


def diurnal_times(rng: np.random.Generator, n: int, start_us: int, end_us: int) -> np.ndarray:
    """n instants in [start, end), denser by "day" (1 + 0.5 sin, 24 h period from start)."""
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        t = rng.integers(start_us, end_us, 2 * n)
        phase = 2 * np.pi * (((t - start_us) // 1_000_000) % 86_400) / 86_400
        keep = t[rng.random(len(t)) * 1.5 < 1.0 + 0.5 * np.sin(phase - np.pi / 2)]
        out.append(keep)
        have += len(keep)
    return np.sort(np.concatenate(out)[:n])


def copy_lines(conn: psycopg.Connection, lines: list[str]) -> None:
    with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
        for i in range(0, len(lines), 20_000):
            copy.write("".join(lines[i : i + 20_000]))


def load(conn: psycopg.Connection, pop: Population, args: argparse.Namespace, t0_us: int) -> float:
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    start_us = t0_us - args.days * 86_400_000_000
    times = diurnal_times(rng, args.count, start_us, t0_us)
    chunk, done = 100_000, 0
    for i in range(0, args.count, chunk):
        lines = pop.draw(rng, times[i : i + chunk], unfinished_share=UNFINISHED_SHARE)
        with conn.transaction():
            copy_lines(conn, lines)
        done += len(lines)
        elapsed = time.perf_counter() - started
        print(
            f"[bench] loaded {done:,} / {args.count:,} runs, {elapsed:.1f} s "
            f"({done / elapsed:,.0f} rows/s)",
            file=sys.stderr,
        )
    conn.execute("VACUUM (ANALYZE) agent_runs")
    return time.perf_counter() - started


# --- measurements ------------------------------------------------------------------------------


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": [round(s, 6) for s in samples],
    }


def fetch(conn: psycopg.Connection, sql: str, params: dict[str, Any] | None = None) -> int:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return len(cur.fetchall())


def whole_table(
    conn: psycopg.Connection, engine: Any, repeat: int, analyze: bool
) -> dict[str, Any]:
    from conveyor.analytics.rollup import rollup

    info: dict[str, Any] = {}

    def timed_rollup(name: str, truncate: bool) -> Callable[[], float]:
        def call() -> float:
            if truncate:
                conn.execute("TRUNCATE run_rollups, analytics_watermarks")
            t0 = time.perf_counter()
            result = rollup(engine, full=True)
            seconds = time.perf_counter() - t0
            info.setdefault(name, []).append(result.model_dump(mode="json"))
            return seconds

        return call

    def timed_query(name: str, percentiles: bool) -> Callable[[], float]:
        sql = group_by_sql(percentiles, minute=False)

        def call() -> float:
            t0 = time.perf_counter()
            rows = fetch(conn, sql)
            seconds = time.perf_counter() - t0
            info.setdefault(name, []).append({"rows": rows})
            return seconds

        return call

    methods = [
        ("group_by", timed_query("group_by", False)),
        ("full_rebuild", timed_rollup("full_rebuild", True)),
        ("group_by_percentiles", timed_query("group_by_percentiles", True)),
        ("full_rewrite", timed_rollup("full_rewrite", False)),
    ]
    print("[bench] warm-up: one untimed full rollup", file=sys.stderr)
    conn.execute("TRUNCATE run_rollups, analytics_watermarks")
    warm = rollup(engine, full=True)
    if analyze:  # what autovacuum does within a minute of the first rebuild
        conn.execute("ANALYZE run_rollups")
    fetch(conn, group_by_sql(True, minute=False))
    samples: dict[str, list[float]] = {name: [] for name, _ in methods}
    for r in range(repeat):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for name, call in order:
            samples[name].append(call())
        line = ", ".join(f"{n} {samples[n][-1]:.2f} s" for n, _ in methods)
        print(f"[bench] round {r + 1}/{repeat}: {line}", file=sys.stderr)
    stats = {name: summary(values) for name, values in samples.items()}
    base = stats["group_by"]["median"]
    last = {name: runs[-1] for name, runs in info.items()}
    return {
        "seconds": stats,
        "over_group_by": {n: s["median"] / base for n, s in stats.items()},
        "last": last,
        "warmup_rollup": warm.model_dump(mode="json"),
        "rollup_rows": dict(
            conn.execute("SELECT grain, count(*) FROM run_rollups GROUP BY 1").fetchall()
        ),
        "target": f"full_rebuild median <= {TARGET_FULL_S} s",
        "target_met": stats["full_rebuild"]["median"] <= TARGET_FULL_S,
    }


def incremental(
    conn: psycopg.Connection, engine: Any, pop: Population, args: argparse.Namespace, t0_us: int
) -> dict[str, Any]:
    from conveyor.analytics.rollup import rollup

    rng = np.random.default_rng(args.seed + 1)
    per_minute = max(1, round(args.count / (args.days * 1440)))
    start_us = t0_us - args.days * 86_400_000_000
    minute_us = 60_000_000
    samples: dict[str, list[float]] = {
        "incremental_minute": [],
        "group_by_minute": [],
        "group_by_minute_pct": [],
    }
    results: list[dict[str, Any]] = []
    if args.analyze:
        conn.execute("ANALYZE run_rollups")
    rollup(engine)  # watermark in place, nothing new
    for k in range(args.minutes + 1):
        m_us = t0_us + (k + 1) * minute_us
        fresh = np.sort(rng.integers(m_us, m_us + minute_us, per_minute))
        late = rng.integers(start_us, t0_us - 10 * minute_us, args.late)
        finished = np.concatenate([fresh, late])
        if args.clock == "minute":
            updated = np.concatenate([fresh, rng.integers(m_us, m_us + minute_us, args.late)])
            updated = np.minimum(
                updated + rng.integers(1_000, 50_000, len(updated)), m_us + minute_us - 1
            )
        else:
            updated = None
        lines = pop.draw(rng, finished, updated_us=updated)
        with conn.transaction():
            copy_lines(conn, lines)
            if updated is None:
                conn.execute(
                    "UPDATE agent_runs SET updated_at = now() WHERE id = ANY(%s)",
                    [[line.split("\t", 1)[0] for line in lines]],
                )
        minute = datetime.fromtimestamp(m_us / 1e6, UTC)

        names = list(samples)
        timings: dict[str, float] = {}
        for name in names[k % 3 :] + names[: k % 3]:
            t0 = time.perf_counter()
            if name == "incremental_minute":
                result = rollup(engine)
                timings[name] = time.perf_counter() - t0
                results.append(result.model_dump(mode="json") | {"inserted": len(lines)})
            else:
                fetch(conn, group_by_sql(name.endswith("pct"), minute=True), {"m": minute})
                timings[name] = time.perf_counter() - t0
        if k == 0:
            results.clear()
            continue  # warm-up round
        for name, seconds in timings.items():
            samples[name].append(seconds * 1000.0)
        r = results[-1]
        print(
            f"[bench] minute {k}/{args.minutes}: rollup {timings['incremental_minute'] * 1000:.1f}"
            f" ms ({r['minutes']} minutes, {r['rows_written']} rows written), group_by "
            f"{timings['group_by_minute'] * 1000:.2f} ms",
            file=sys.stderr,
        )
    stats = {name: summary(values) for name, values in samples.items()}
    base = stats["group_by_minute"]["median"]
    return {
        "ms": stats,
        "over_group_by_minute": {n: s["median"] / base for n, s in stats.items()},
        "runs_per_minute": per_minute,
        "late_per_minute": args.late,
        "clock": args.clock,
        "rollups": results,
        "minutes_recomputed_median": statistics.median(r["minutes"] for r in results),
        "rows_written_median": statistics.median(r["rows_written"] for r in results),
        "target": f"incremental_minute median <= {TARGET_INCREMENTAL_MS} ms",
        "target_met": stats["incremental_minute"]["median"] <= TARGET_INCREMENTAL_MS,
    }


def explain(engine: Any) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of rollup.py's statements, each rolled back, to stderr."""
    from sqlalchemy import text

    r = importlib.import_module("conveyor.analytics.rollup")

    def show(title: str, stmt: Any, params: dict[str, Any]) -> None:
        with engine.connect() as conn, conn.begin() as tx:
            plan = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + stmt.text), params)
            print(f"\n--- {title}", file=sys.stderr)
            for (line,) in plan:
                print(line, file=sys.stderr)
            tx.rollback()

    with engine.connect() as conn:
        all_minutes = list(
            conn.execute(text("SELECT bucket FROM run_rollups WHERE grain = 'minute'")).scalars()
        )
        until = conn.execute(text("SELECT max(updated_at) FROM agent_runs")).scalar_one()
    since = until - timedelta(minutes=1)
    show("ALL_MINUTES (full rebuild, table up to date)", r.REBUILD["minute", True], {})
    show(f"HOURS over all {len(all_minutes)} minute rows (full)", r.HOURS, {"minutes": all_minutes})
    window = {"since": since - r.OVERLAP, "until": until}
    show("CHANGED_MINUTES (last minute)", r.CHANGED_MINUTES, window)
    with engine.connect() as conn:
        minutes = list(conn.execute(r.CHANGED_MINUTES, window).scalars())
    show(f"MINUTES ({len(minutes)} minutes)", r.MINUTES, {"minutes": minutes})
    show(f"HOURS ({len(minutes)} minutes)", r.HOURS, {"minutes": minutes})


# --- run and report ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.models.db import engine_for
    from conveyor.models.migrate import upgrade

    machine = h.machine_info()
    source = Path(importlib.import_module("conveyor.analytics.rollup").__file__ or "").read_bytes()
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    t0_us = int((hour - timedelta(minutes=30)).timestamp()) * 1_000_000
    pop = Population(args.agents, args.seed)
    with h.scratch_database("rollup") as db:
        url = h.pg_url(db, "postgresql+psycopg")
        upgrade(url)
        query = f"?options={quote(args.pg_options)}" if args.pg_options else ""
        engine = engine_for(url + query)
        try:
            with psycopg.connect(h.pg_url(db) + query, autocommit=True) as conn:
                load_s = load(conn, pop, args, t0_us)
                size = conn.execute(
                    "SELECT pg_total_relation_size('agent_runs'), pg_relation_size('agent_runs')"
                ).fetchone()
                counts = conn.execute(
                    "SELECT count(*), count(finished_at), "
                    "count(DISTINCT date_trunc('minute', finished_at)) FROM agent_runs"
                ).fetchone()
                assert size is not None and counts is not None
                full = whole_table(conn, engine, args.repeat, args.analyze)
                inc = incremental(conn, engine, pop, args, t0_us)
                if args.explain:
                    explain(engine)
                server = conn.execute(
                    "SELECT current_setting('server_version'), current_setting('work_mem'), "
                    "current_setting('shared_buffers'), "
                    "current_setting('max_parallel_workers_per_gather'), "
                    "current_setting('jit'), current_setting('autovacuum')"
                ).fetchone()
                stats = conn.execute(
                    "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
                    "WHERE relname = 'run_rollups'"
                ).fetchone()
                assert server is not None
        finally:
            engine.dispose()
    config = {
        k: getattr(args, k)
        for k in ("count", "days", "agents", "repeat", "minutes", "late", "seed")
    }
    return {
        "benchmark": "rollup",
        "machine": machine | {"loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "postgres": dict(
            zip(
                ["version", "work_mem", "shared_buffers", "parallel_workers", "jit", "autovacuum"],
                server,
                strict=True,
            )
        )
        | {"run_rollups_analyzed": [str(x) if x else None for x in stats or ()]},
        "config": config
        | {"clock": args.clock, "analyze_rollups": args.analyze, "pg_options": args.pg_options},
        "rollup_py_sha256": hashlib.sha256(source).hexdigest()[:12],
        "data": {
            "runs": counts[0],
            "finished": counts[1],
            "minutes": counts[2],
            "load_seconds": round(load_s, 1),
            "agent_runs_mb": round(size[0] / 2**20, 1),
            "agent_runs_heap_mb": round(size[1] / 2**20, 1),
        },
        "full": full,
        "incremental": inc,
    }


def report(result: dict[str, Any]) -> None:
    full, inc, data = result["full"], result["incremental"], result["data"]
    m = result["machine"]
    notes = {
        n: f"{last['rows_written']} rows written, {last['minutes']} minute rows"
        if "rows_written" in last
        else f"{last['rows']} groups"
        for n, last in full["last"].items()
    }  # fmt: skip
    rows = [
        [n, s["median"], s["min"], s["max"], full["over_group_by"][n], notes.get(n, "")]
        for n, s in full["seconds"].items()
    ]
    h.print_table(
        f"Whole table, seconds ({data['runs']:,} runs, {data['minutes']:,} minutes, "
        f"{data['agent_runs_mb']} MB; {result['config']['repeat']} rounds; {m['date']}, "
        f"load {m['loadavg_at_start']})",
        ["method", "median", "min", "max", "/ group_by", ""],
        rows,
    )
    rows = [
        [n, s["median"], s["min"], s["max"], inc["over_group_by_minute"][n]]
        for n, s in inc["ms"].items()
    ]
    h.print_table(
        f"Incremental minute, ms ({inc['runs_per_minute']} new + {inc['late_per_minute']} late "
        f"runs a minute, clock {inc['clock']}; rollup recomputed "
        f"{inc['minutes_recomputed_median']} minutes, wrote {inc['rows_written_median']} rows "
        f"(medians))",
        ["method", "median", "min", "max", "/ group_by_minute"],
        rows,
    )
    fs, ims = full["seconds"]["full_rebuild"]["median"], inc["ms"]["incremental_minute"]["median"]
    print(
        f"verdict: full_rebuild {fs:.2f} s = {full['over_group_by']['full_rebuild']:.1f} x "
        f"group_by (target <= {TARGET_FULL_S:g} s: {'MET' if full['target_met'] else 'MISSED'})"
    )
    print(
        f"verdict: incremental_minute {ims:.1f} ms = "
        f"{inc['over_group_by_minute']['incremental_minute']:.1f} x group_by_minute "
        f"(target <= {TARGET_INCREMENTAL_MS:g} ms: {'MET' if inc['target_met'] else 'MISSED'})"
    )
    print(
        f"info: load {data['load_seconds']} s; load average at end {m['loadavg_at_end']}; "
        f"run_rollups ANALYZEd: {'yes' if result['config']['analyze_rollups'] else 'no'}; "
        f"options: {result['config']['pg_options'] or 'none'}; "
        f"rollup.py sha256 {result['rollup_py_sha256']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("-n", "--count", type=int, default=1_000_000, help="runs loaded (1000000)")
    add("--days", type=int, default=7, help="days the finished runs span (7)")
    add("--agents", type=int, default=20, help="agents (20)")
    add("--repeat", type=int, default=5, help="timed whole-table rounds (5)")
    add("--minutes", type=int, default=10, help="timed incremental minutes, at most 28 (10)")
    add("--late", type=int, default=3, help="late runs (old minutes) per incremental minute (3)")
    add("--clock", choices=["minute", "now"], default="minute", help="updated_at of new runs")
    add("--seed", type=int, default=1, help="data seed (1)")
    add(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="do not ANALYZE run_rollups after the warm-up rebuild and before the incremental "
        "rounds (default: do, as autovacuum would within a minute)",
    )
    add(
        "--pg-options",
        default="",
        help="libpq options for every connection, rollup's and the baselines', e.g. "
        "'-c jit=off -c work_mem=64MB' (default: none, the server's settings)",
    )
    add("--explain", action="store_true", help="EXPLAIN (ANALYZE, BUFFERS) to stderr at the end")
    add("--json", action="store_true", help="print the results as JSON")
    if not 1 <= parser.parse_args(argv).minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be 1..{MAX_MINUTES} (T0 + minutes stays in the past)")
    return h.run_main(parser, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
