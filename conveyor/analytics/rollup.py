"""Incremental rollups of finished runs per agent, pool and minute, and hour from minutes.

A run belongs to the minute of its `finished_at`. Each rollup recomputes, wholly and in SQL
(`percentile_cont`), every minute that holds a run written since the watermark (the newest
`agent_runs.updated_at` already rolled up, less OVERLAP for transactions still committing),
so a run is counted once however often it is seen, and a run that finished late lands in
its own minute. Rows are upserted and only rewritten when their numbers change, so running
the same window again changes nothing. Incrementally, hour rows sum their minute rows, and
their percentiles are computed over the hour's runs, since percentiles do not add up; a full
rebuild computes minutes and hours straight from the runs still held.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import Engine, TextClause, text

WATERMARK = "rollup"
OVERLAP = timedelta(seconds=60)
"""Re-read this much before the watermark: now() is a transaction's start, not its commit."""
TUNING = ("SET LOCAL jit = off", "SET LOCAL work_mem = '256MB'")
"""JIT costs more than these short statements take; percentiles sort in memory, not on disk."""
FINAL = "('succeeded','failed','rejected','cancelled')"
DURATION = "extract(epoch FROM a.finished_at - a.started_at)"
WAIT = "extract(epoch FROM a.started_at - a.enqueued_at)"

_FIGURES = """
    count(*) AS runs,
    count(*) FILTER (WHERE a.status = 'succeeded') AS succeeded,
    count(*) FILTER (WHERE a.status = 'failed') AS failed,
    count(*) FILTER (WHERE a.status = 'rejected') AS rejected,
    count(*) FILTER (WHERE a.status = 'cancelled') AS cancelled,
    coalesce(sum(greatest(a.attempts - 1, 0)), 0) AS retries,
"""
_PERCENTILES = f"""
    percentile_cont(0.5) WITHIN GROUP (ORDER BY {DURATION})
        FILTER (WHERE a.started_at IS NOT NULL) AS duration_p50,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY {DURATION})
        FILTER (WHERE a.started_at IS NOT NULL) AS duration_p95,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY {DURATION})
        FILTER (WHERE a.started_at IS NOT NULL) AS duration_p99,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY {WAIT})
        FILTER (WHERE a.started_at IS NOT NULL AND a.enqueued_at IS NOT NULL) AS wait_p50,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY {WAIT})
        FILTER (WHERE a.started_at IS NOT NULL AND a.enqueued_at IS NOT NULL) AS wait_p95
"""
_COLUMNS = (
    "runs, succeeded, failed, rejected, cancelled, retries, duration_p50, duration_p95, "
    "duration_p99, wait_p50, wait_p95, throughput"
)
_UPSERT = f"""
ON CONFLICT (grain, bucket, agent, pool) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _COLUMNS.split(", "))}, updated_at = now()
WHERE ({", ".join(f"r.{c}" for c in _COLUMNS.split(", "))})
    IS DISTINCT FROM ({", ".join(f"excluded.{c}" for c in _COLUMNS.split(", "))})
"""
_INSERT = f"INSERT INTO run_rollups AS r (grain, bucket, agent, pool, {_COLUMNS})"

MINUTES = text(f"""
{_INSERT}
SELECT 'minute', b.bucket, a.agent, a.pool, {_FIGURES} {_PERCENTILES}, count(*) / 60.0
FROM unnest(CAST(:minutes AS timestamptz[])) AS b(bucket)
JOIN agent_runs a ON a.finished_at >= b.bucket AND a.finished_at < b.bucket + interval '1 minute'
WHERE a.status IN {FINAL}
GROUP BY b.bucket, a.agent, a.pool
{_UPSERT}
""")


def _rebuild(grain: str, *, upsert: bool) -> TextClause:
    """Every bucket of one grain straight from agent_runs (a full rebuild). Into an empty
    grain a plain INSERT does: nothing can conflict. Grouping by the names in the "C"
    collation sorts them bytewise, a third faster than the database's own collation."""
    seconds = {"minute": 60, "hour": 3600}[grain]
    return text(f"""
{_INSERT}
SELECT '{grain}', date_trunc('{grain}', a.finished_at), a.agent COLLATE "C", a.pool COLLATE "C",
       {_FIGURES} {_PERCENTILES},
       count(*) / {seconds}.0
FROM agent_runs a
WHERE a.finished_at IS NOT NULL AND a.status IN {FINAL}
GROUP BY 2, 3, 4
{_UPSERT if upsert else ""}
""")


REBUILD = {
    (grain, upsert): _rebuild(grain, upsert=upsert)
    for grain in ("minute", "hour")
    for upsert in (True, False)
}
GRAINS_PRESENT = text(
    "SELECT g FROM (VALUES ('minute'), ('hour')) AS v(g) "
    "WHERE EXISTS (SELECT 1 FROM run_rollups WHERE grain = v.g)"
)

HOURS = text(f"""
{_INSERT}
WITH hours AS (SELECT DISTINCT date_trunc('hour', m) AS bucket
               FROM unnest(CAST(:minutes AS timestamptz[])) AS m),
sums AS (
    SELECT h.bucket, m.agent, m.pool, sum(m.runs) AS runs, sum(m.succeeded) AS succeeded,
           sum(m.failed) AS failed, sum(m.rejected) AS rejected, sum(m.cancelled) AS cancelled,
           sum(m.retries) AS retries
    FROM hours h
    JOIN run_rollups m ON m.grain = 'minute' AND m.bucket >= h.bucket
                      AND m.bucket < h.bucket + interval '1 hour'
    GROUP BY h.bucket, m.agent, m.pool
), spread AS (
    SELECT h.bucket, a.agent, a.pool, {_PERCENTILES}
    FROM hours h
    JOIN agent_runs a ON a.finished_at >= h.bucket AND a.finished_at < h.bucket + interval '1 hour'
    WHERE a.status IN {FINAL}
    GROUP BY h.bucket, a.agent, a.pool
)
SELECT 'hour', s.bucket, s.agent, s.pool, s.runs, s.succeeded, s.failed, s.rejected,
       s.cancelled, s.retries, p.duration_p50, p.duration_p95, p.duration_p99, p.wait_p50,
       p.wait_p95, s.runs / 3600.0
FROM sums s LEFT JOIN spread p USING (bucket, agent, pool)
{_UPSERT}
""")

CHANGED_MINUTES = text(f"""
SELECT DISTINCT date_trunc('minute', finished_at) AS minute
FROM agent_runs
WHERE updated_at > :since AND updated_at <= :until
  AND finished_at IS NOT NULL AND status IN {FINAL}
""")


class RollupResult(BaseModel):
    """What one rollup did."""

    full: bool
    """True for a rebuild of every minute (no watermark yet, or asked for)."""
    minutes: int
    """Minute buckets recomputed."""
    rows_written: int
    """Rollup rows inserted or changed (0 when re-run over the same data)."""
    watermark: datetime | None
    seconds: float


def rollup(engine: Engine, *, full: bool = False) -> RollupResult:
    """Bring run_rollups up to date with agent_runs; safe to run concurrently and repeatedly."""
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('conveyor.analytics.rollup'))"))
        for setting in TUNING:
            conn.execute(text(setting))
        since = conn.execute(
            text("SELECT value FROM analytics_watermarks WHERE name = :n"), {"n": WATERMARK}
        ).scalar_one_or_none()
        until = conn.execute(text("SELECT coalesce(max(updated_at), now()) FROM agent_runs"))
        until = until.scalar_one()
        rebuild = full or since is None
        if since is None or full:
            present = set(conn.execute(GRAINS_PRESENT).scalars())
            written = sum(
                conn.execute(REBUILD[grain, grain in present]).rowcount
                for grain in ("minute", "hour")
            )
            minutes = conn.execute(
                text("SELECT count(DISTINCT bucket) FROM run_rollups WHERE grain = 'minute'")
            ).scalar_one()
            conn.execute(text("ANALYZE run_rollups"))
        else:
            params = {"since": since - OVERLAP, "until": until}
            changed = list(conn.execute(CHANGED_MINUTES, params).scalars())
            written = conn.execute(MINUTES, {"minutes": changed}).rowcount if changed else 0
            if changed:
                written += conn.execute(HOURS, {"minutes": changed}).rowcount
            minutes = len(changed)
        conn.execute(
            text(
                "INSERT INTO analytics_watermarks (name, value) VALUES (:n, :v) "
                "ON CONFLICT (name) DO UPDATE SET value = greatest("
                "analytics_watermarks.value, excluded.value)"
            ),
            {"v": until, "n": WATERMARK},
        )
    return RollupResult(
        full=rebuild,
        minutes=minutes,
        rows_written=max(0, written),
        watermark=until,
        seconds=round(time.perf_counter() - started, 4),
    )
