"""Commands about queues and pools: exporter, autoscale and status."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from conveyor.cli.common import get_app, json_option, print_json, print_table
from conveyor.cli.services import LOGLEVELS, stop_on_signals
from conveyor.metrics import Exporter, PoolView, QueueReader, scale_document, serve
from conveyor.metrics.autoscale import LocalAutoscaler, ScaleEvent
from conveyor.runs.status import RunStatus
from conveyor.workers.inspect import workers_by_pool

DEFAULT_PORT = 9810


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--cache-seconds",
    type=click.FloatRange(0, 60),
    default=1.0,
    show_default=True,
    help="Reuse one broker reading for this long, so many scrapers cost one read.",
)
def exporter(host: str, port: int, cache_seconds: float) -> None:
    """Serve queue, pool and task metrics over HTTP.

    \b
    /metrics       Prometheus text: conveyor_queue_ready/reserved/delayed/oldest_age_seconds,
                   conveyor_pool_workers/busy_ratio/desired_replicas, conveyor_tasks_total,
                   conveyor_task_duration_seconds, conveyor_task_queue_wait_seconds
    /scale/POOL    JSON for KEDA's metrics-api scaler (valueLocation: desired_replicas)
    /healthz       broker reachable, and seconds since the last Celery event

    Queue counts come straight from the broker (every Redis priority list, kombu's unacked
    hash; RabbitMQ passive declares plus the management API when
    CONVEYOR_RABBITMQ_MANAGEMENT_URL is set). With CONVEYOR_EXPORTER_TOKEN set, /metrics and
    /scale require `Authorization: Bearer TOKEN`.
    """
    app = get_app()
    stop = stop_on_signals()
    with serve(Exporter(app, ttl=cache_seconds), host, port) as server:
        click.echo(f"conveyor exporter on http://{host}:{server.server_port}/metrics", err=True)
        stop.wait()
    click.echo("conveyor exporter: stopped", err=True)


@click.command()
@click.option("--pool", "pools", multiple=True, help="Scale only this pool (repeatable).")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=15.0,
    show_default=True,
    help="Polling interval, seconds (KEDA's pollingInterval).",
)
@click.option(
    "--scale-down-window",
    type=click.FloatRange(0, 86400),
    default=300.0,
    show_default=True,
    help="Scale in only to the highest recommendation of this many seconds (the HPA's "
    "scaleDown stabilizationWindowSeconds).",
)
@click.option("--loglevel", type=LOGLEVELS, default="WARNING", show_default=True)
@json_option
def autoscale(
    pools: tuple[str, ...], interval: float, scale_down_window: float, loglevel: str, as_json: bool
) -> None:
    """Run each pool's workers as local processes, scaled like KEDA would scale them.

    Reads the broker every --interval, computes desired replicas with the exporter's formula
    (min_replicas, max_replicas, target_per_slot and target_drain_seconds per pool in
    CONVEYOR_POOLS), starts workers at once when more are needed, and removes the newest
    by SIGTERM (warm shutdown) when fewer are. Each change is printed (--json: one JSON
    object per line). Ctrl-C stops every worker warmly.
    """
    app = get_app()
    names = list(pools) or sorted(app.settings.pools)
    for name in names:
        app.settings.pool(name)

    def report(event: ScaleEvent) -> None:
        if as_json:
            click.echo(event.model_dump_json())
        else:
            click.echo(
                f"{event.pool}: {event.action} -> {event.replicas} worker(s) (desired "
                f"{event.desired}, ready {event.ready}, reserved {event.reserved}, oldest "
                f"{event.oldest_age_seconds:.1f}s)"
                + (f", exit code {event.exit_code}" if event.exit_code is not None else ""),
                err=True,
            )

    scaler = LocalAutoscaler(
        app,
        names,
        interval=interval,
        scale_down_window=scale_down_window,
        loglevel=loglevel,
        log_dir=str(app.settings.data_dir / "logs"),
        on_event=report,
    )
    scaler.run(stop_on_signals())


@click.command()
@json_option
def status(as_json: bool) -> None:
    """Queues (ready, reserved, delayed, oldest age), pools (workers, desired replicas) and
    recent failures: the same numbers the exporter serves."""
    app = get_app()
    reader = QueueReader(app, ttl=0)
    nodes = workers_by_pool(app)
    view = PoolView(app, reader, lambda: {p: (len(n), 0) for p, n in nodes.items()})
    try:
        states, _, decisions = view.read()
    finally:
        reader.close()
    failures = [
        r for s in (RunStatus.FAILED, RunStatus.REJECTED) for r in app.runs.find(status=s, limit=5)
    ]
    failures.sort(key=lambda r: r.finished_at or r.enqueued_at or datetime.min.replace(tzinfo=UTC))
    failures = failures[::-1][:5]
    if as_json:
        print_json(
            {
                "queues": [s.model_dump() for s in states],
                "pools": [scale_document(d, states) for d in decisions],
                "workers": nodes,
                "recent_failures": [
                    f.model_dump(mode="json", exclude={"error_traceback"}) for f in failures
                ],
            }
        )
        return
    print_table(
        f"queues ({states[0].reserved_source if states else 'no queues'})",
        ["queue", "pool", "ready", "reserved", "delayed", "oldest age s"],
        [
            (s.queue, s.pool, s.ready, s.reserved, s.delayed, f"{s.oldest_age_seconds:.1f}")
            for s in states
        ],
    )
    print_table(
        "pools",
        ["pool", "workers", "desired", "by backlog", "by age", "min..max"],
        [
            (
                d.pool,
                ", ".join(nodes.get(d.pool, [])) or "none",
                d.desired_replicas,
                d.by_backlog,
                d.by_age,
                f"{d.inputs.min_replicas}..{d.inputs.max_replicas}",
            )
            for d in decisions
        ],
    )
    print_table(
        "recent failures",
        ["id", "agent", "status", "error"],
        [(f.id, f.agent, f.status.value, (f.error_message or "")[:80]) for f in failures],
    )
