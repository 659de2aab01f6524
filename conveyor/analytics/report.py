"""The analytics report over a window: busiest, slowest and most failing agents, failure
types, queue wait per pool, and the share of runs within each agent's latency target."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import Engine, text

from conveyor.analytics.rollup import DURATION, FINAL, WAIT
from conveyor.errors import InvalidInput

MAX_WINDOW_SECONDS = 31 * 86400
TOP = 5


class ReportRequest(BaseModel):
    """What `analytics.report` takes."""

    since_seconds: float = Field(default=3600.0, gt=0, le=MAX_WINDOW_SECONDS)
    """The window: runs finished in the last this many seconds (default 1 h, at most 31 d)."""
    agent: str | None = Field(default=None, min_length=1, max_length=200)


class AgentFigures(BaseModel):
    agent: str
    runs: int
    succeeded: int
    failed: int
    """Failed or rejected."""
    failure_rate: float
    retries: int
    duration_p50: float | None
    duration_p95: float | None
    slo_seconds: float
    within_slo: float
    """Share of runs that finished within `slo_seconds` of starting."""


class FailureType(BaseModel):
    error_type: str
    count: int
    agents: list[str]
    example_run_id: str


class PoolWait(BaseModel):
    pool: str
    runs: int
    wait_p50: float | None
    wait_p95: float | None


class Report(BaseModel):
    since: datetime
    until: datetime
    agent: str | None
    runs: int
    busiest: list[AgentFigures]
    slowest: list[AgentFigures]
    most_failing: list[AgentFigures]
    agents: list[AgentFigures]
    failure_types: list[FailureType]
    queue_wait: list[PoolWait]


_AGENTS = text(f"""
SELECT a.agent, count(*) AS runs,
       count(*) FILTER (WHERE a.status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE a.status IN ('failed', 'rejected')) AS failed,
       coalesce(sum(greatest(a.attempts - 1, 0)), 0) AS retries,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY {DURATION})
           FILTER (WHERE a.started_at IS NOT NULL) AS duration_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY {DURATION})
           FILTER (WHERE a.started_at IS NOT NULL) AS duration_p95,
       coalesce(avg(CASE WHEN {DURATION}
                              <= coalesce((CAST(:targets AS jsonb) ->> a.agent)::float, :target)
                         THEN 1.0 ELSE 0.0 END) FILTER (WHERE a.started_at IS NOT NULL), 0)
           AS within_slo
FROM agent_runs a
WHERE a.finished_at >= :since AND a.finished_at < :until AND a.status IN {FINAL}
  AND (CAST(:agent AS text) IS NULL OR a.agent = :agent)
GROUP BY a.agent
""")

_FAILURES = text("""
SELECT coalesce(a.error_type, a.status) AS error_type, count(*) AS count,
       array_agg(DISTINCT a.agent) AS agents, min(a.id) AS example_run_id
FROM agent_runs a
WHERE a.finished_at >= :since AND a.finished_at < :until AND a.status IN ('failed', 'rejected')
  AND (CAST(:agent AS text) IS NULL OR a.agent = :agent)
GROUP BY 1
ORDER BY count DESC, error_type
""")

_WAIT = text(f"""
SELECT a.pool, count(*) AS runs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY {WAIT})
           AS wait_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY {WAIT})
           AS wait_p95
FROM agent_runs a
WHERE a.finished_at >= :since AND a.finished_at < :until AND a.status IN {FINAL}
  AND a.started_at IS NOT NULL AND a.enqueued_at IS NOT NULL
  AND (CAST(:agent AS text) IS NULL OR a.agent = :agent)
GROUP BY a.pool
ORDER BY a.pool
""")

_AGENT_SEEN = text("SELECT EXISTS (SELECT 1 FROM agent_runs WHERE agent = :agent)")


def build_report(
    engine: Engine,
    request: ReportRequest,
    *,
    known_agents: set[str],
    slo_seconds: dict[str, float],
    slo_default_seconds: float,
    now: datetime | None = None,
) -> Report:
    """The report for the window ending now; an agent neither registered nor ever run is
    refused, so a typo does not read as an idle agent."""
    until = now or datetime.now(UTC)
    since = until - timedelta(seconds=request.since_seconds)
    params = {
        "since": since,
        "until": until,
        "agent": request.agent,
        "targets": json.dumps(slo_seconds),
        "target": slo_default_seconds,
    }
    with engine.connect() as conn:
        unknown = request.agent is not None and request.agent not in known_agents
        if unknown and not conn.execute(_AGENT_SEEN, {"agent": request.agent}).scalar_one():
            known = ", ".join(sorted(known_agents)) or "none"
            message = f"unknown agent {request.agent!r}; known: {known}"
            raise InvalidInput("analytics.report", [{"loc": ("agent",), "msg": message}])
        agents = [
            AgentFigures(
                **r._mapping,
                failure_rate=r.failed / r.runs if r.runs else 0.0,
                slo_seconds=slo_seconds.get(r.agent, slo_default_seconds),
            )
            for r in conn.execute(_AGENTS, params)
        ]
        failures = [FailureType(**r._mapping) for r in conn.execute(_FAILURES, params)]
        waits = [PoolWait(**r._mapping) for r in conn.execute(_WAIT, params)]
    agents.sort(key=lambda a: a.agent)
    return Report(
        since=since,
        until=until,
        agent=request.agent,
        runs=sum(a.runs for a in agents),
        busiest=sorted(agents, key=lambda a: -a.runs)[:TOP],
        slowest=sorted(agents, key=lambda a: -(a.duration_p95 or 0.0))[:TOP],
        most_failing=sorted(
            (a for a in agents if a.failed), key=lambda a: (-a.failure_rate, -a.failed)
        )[:TOP],
        agents=agents,
        failure_types=failures,
        queue_wait=waits,
    )
