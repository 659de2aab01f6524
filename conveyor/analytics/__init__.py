"""Analytics over agent_runs: incremental rollups, the report, and retention.

Plain Python over SQL; the `analytics.*` agents in `conveyor.analytics.agents` bind it to the
analytics pool, and `conveyor report` calls it directly.
"""

from __future__ import annotations

from conveyor.analytics.report import Report, ReportRequest, build_report
from conveyor.analytics.rollup import RollupResult, rollup

__all__ = ["Report", "ReportRequest", "RollupResult", "build_report", "rollup"]
