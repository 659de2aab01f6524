"""Built-in agents of the analytics pool: thin bindings of conveyor.analytics."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from conveyor.agents import agent, registry
from conveyor.analytics import Report, ReportRequest, RollupResult, build_report, rollup
from conveyor.analytics.retention import (
    RetentionPolicy,
    RetentionRequest,
    RetentionResult,
    purge_runs,
)
from conveyor.analytics.settings import analytics_settings
from conveyor.context import current_run
from conveyor.models.db import engine_for

POOL = "analytics"


class RollupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    full: bool = False
    """Recompute every minute instead of only those written since the watermark."""


@agent(name="analytics.rollup", pool=POOL, idempotent=True)
def run_rollup(request: RollupRequest) -> RollupResult:
    """Bring run_rollups (per agent, pool, minute and hour) up to date."""
    return rollup(engine_for(str(current_run().settings.database_url)), full=request.full)


@agent(name="analytics.report", pool=POOL, idempotent=True)
def report(request: ReportRequest) -> Report:
    """Busiest, slowest and most failing agents, failure types, queue wait, SLO shares."""
    analytics = analytics_settings()
    return build_report(
        engine_for(str(current_run().settings.database_url)),
        request,
        known_agents=set(registry.names()),
        slo_seconds=analytics.slo_seconds,
        slo_default_seconds=analytics.slo_default_seconds,
    )


@agent(name="analytics.retention", pool=POOL, idempotent=True)
def retention(request: RetentionRequest) -> RetentionResult:
    """Purge runs past CONVEYOR_RETENTION_DAYS (failures: _FAILED_DAYS) in bounded batches."""
    analytics = analytics_settings()
    policy = RetentionPolicy(
        days=analytics.retention_days,
        failed_days=analytics.retention_failed_days,
        batch=request.batch_size or analytics.retention_batch,
    )
    return purge_runs(
        engine_for(str(current_run().settings.database_url)),
        policy,
        max_batches=request.max_batches,
        max_seconds=request.max_seconds,
    )
