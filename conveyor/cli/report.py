"""`conveyor report`: the analytics report as tables or JSON."""

from __future__ import annotations

from datetime import timedelta

import click

from conveyor.analytics import Report, ReportRequest, build_report, rollup
from conveyor.analytics.report import AgentFigures
from conveyor.analytics.settings import analytics_settings
from conveyor.cli.common import Age, get_app, json_option, print_json, print_table
from conveyor.errors import ConveyorError
from conveyor.models.db import engine_for


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


@click.command()
@click.option(
    "--since",
    type=Age(),
    default="1h",
    show_default=True,
    help="The window: runs finished in the last 30s, 15m, 2h or 7d (at most 31d).",
)
@click.option("--agent", help="Only this agent (it must be registered or have run).")
@json_option
def report(since: timedelta, agent: str | None, as_json: bool) -> None:
    """Busiest, slowest and most failing agents, failure types with an example run, queue
    wait per pool, and the share of runs within each agent's latency target
    (CONVEYOR_SLO_SECONDS, default CONVEYOR_SLO_DEFAULT_SECONDS). Brings the rollups up to
    date first."""
    try:
        request = ReportRequest(since_seconds=since.total_seconds(), agent=agent)
    except ValueError as exc:
        message = f"invalid --since {since}: it must be above 0s and at most 31d"
        raise ConveyorError(message) from exc
    app = get_app()
    engine = engine_for(str(app.settings.database_url))
    rollup(engine)
    targets = analytics_settings()
    result = build_report(
        engine,
        request,
        known_agents={a.name for a in app.agents},
        slo_seconds=targets.slo_seconds,
        slo_default_seconds=targets.slo_default_seconds,
    )
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    _print(result)


def _print(r: Report) -> None:
    window = f"{r.since:%Y-%m-%d %H:%M:%S} .. {r.until:%H:%M:%S} UTC, {r.runs} finished runs"
    columns = ["agent", "runs", "failed", "fail %", "retries", "p50 s", "p95 s", "SLO s", "in SLO"]

    def rows(agents: list[AgentFigures]) -> list[tuple[object, ...]]:
        return [
            (a.agent, a.runs, a.failed, f"{100 * a.failure_rate:.1f}", a.retries,
             _seconds(a.duration_p50), _seconds(a.duration_p95), f"{a.slo_seconds:g}",
             f"{100 * a.within_slo:.1f}%")
            for a in agents
        ]  # fmt: skip

    print_table(f"busiest ({window})", columns, rows(r.busiest))
    print_table("slowest (by p95)", columns, rows(r.slowest))
    print_table("most failing", columns, rows(r.most_failing))
    print_table(
        "failure types",
        ["error", "count", "agents", "example run"],
        [(f.error_type, f.count, ", ".join(f.agents), f.example_run_id) for f in r.failure_types],
    )
    print_table(
        "queue wait per pool",
        ["pool", "runs", "p50 s", "p95 s"],
        [(w.pool, w.runs, _seconds(w.wait_p50), _seconds(w.wait_p95)) for w in r.queue_wait],
    )
