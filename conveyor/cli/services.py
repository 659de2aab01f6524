"""Commands that run things: up, down, worker, db."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from conveyor.cli.common import get_app, json_option, print_json
from conveyor.config import load_settings
from conveyor.embedded import Embedded
from conveyor.metrics.autoscale import LocalAutoscaler
from conveyor.models.migrate import current_revision, head_revision, upgrade
from conveyor.pools import MAX_ASYNC_SLOTS, MAX_SLOTS
from conveyor.workers.boot import run_worker
from conveyor.workers.supervisor import Supervisor

LOGLEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so a foreground command can shut down in order."""
    stop = threading.Event()

    def handle(signum: int, _: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


@click.command()
@click.option(
    "--pool", "pools", multiple=True, help="Run only this pool (repeatable). Default: all."
)
@click.option("--loglevel", type=LOGLEVELS, default="WARNING", show_default=True)
@click.option(
    "--autoscale",
    "autoscale_interval",
    type=click.FloatRange(0.1, 3600),
    is_flag=False,
    flag_value=15.0,
    help="Scale each pool's workers on queue depth, polling every N seconds (default 15), "
    "as `conveyor autoscale` does.",
)
def up(pools: tuple[str, ...], loglevel: str, autoscale_interval: float | None) -> None:
    """Run the embedded services (when unconfigured) and one worker per pool, in the foreground.

    Ctrl-C or SIGTERM stops the workers with a warm shutdown (running tasks finish or go
    back to the queue), then stops the embedded services. No process is left behind.
    """
    app = get_app()
    names = list(pools) or sorted(app.settings.pools)
    for name in names:
        app.settings.pool(name)
    stop = stop_on_signals()
    if autoscale_interval is not None:
        click.echo(f"conveyor up: autoscaling {', '.join(names)}; Ctrl-C to stop", err=True)
        LocalAutoscaler(
            app,
            names,
            interval=autoscale_interval,
            loglevel=loglevel,
            log_dir=str(app.settings.data_dir / "logs"),
            on_event=lambda e: click.echo(f"{e.pool}: {e.action} -> {e.replicas}", err=True),
        ).run(stop)
        if app.embedded:
            Embedded(app.settings.data_dir).stop()
        return
    supervisor = Supervisor(
        app,
        names,
        loglevel=loglevel,
        grace=app.settings.time_limit + 5,
        log_dir=str(app.settings.data_dir / "logs"),
    )
    exit_code = 0
    try:
        supervisor.start()
        supervisor.wait_ready()
        click.echo(
            f"conveyor up: workers for {', '.join(names)}; "
            f"broker {app.settings.broker_url}; Ctrl-C to stop",
            err=True,
        )
        while not stop.wait(0.5):
            if dead := supervisor.exited():
                click.echo(f"conveyor: worker for pool {dead[0]} exited; stopping", err=True)
                exit_code = 1
                break
    finally:
        click.echo("conveyor: stopping workers...", err=True)
        supervisor.stop()
        if app.embedded:
            Embedded(app.settings.data_dir).stop()
        click.echo("conveyor: stopped", err=True)
    raise SystemExit(exit_code)


@click.command()
@json_option
def down(as_json: bool) -> None:
    """Stop the embedded PostgreSQL and Redis of CONVEYOR_DATA_DIR, if they run."""
    settings = load_settings()
    stopped = Embedded(settings.data_dir).stop()
    if as_json:
        print_json({"data_dir": str(settings.data_dir), "stopped": stopped})
    else:
        click.echo("stopped embedded services" if stopped else "no embedded services running")


@click.command()
@click.option(
    "--pool",
    "pool",
    default="default",
    show_default=True,
    help="The pool whose queues this worker consumes.",
)
@click.option("--name", "node_name", help="Celery node name. Default: POOL@HOSTNAME.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, MAX_ASYNC_SLOTS),
    help=f"Override the pool's concurrency: processes or threads (at most {MAX_SLOTS}), or "
    f"runs in flight for a pool of kind asyncio (at most {MAX_ASYNC_SLOTS}).",
)
@click.option("--loglevel", type=LOGLEVELS, default="INFO", show_default=True)
def worker(pool: str, node_name: str | None, concurrency: int | None, loglevel: str) -> None:
    """Run one worker that consumes only POOL's queues.

    It waits (with backoff) for the database, refuses an unmigrated one, and shuts down
    warm on SIGTERM.
    """
    app = get_app()
    kind = app.settings.pool(pool).kind
    if concurrency is not None and kind != "asyncio" and concurrency > MAX_SLOTS:
        raise click.BadParameter(
            f"{concurrency} is above {MAX_SLOTS} for pool {pool!r} of kind {kind} "
            f"(only kind asyncio allows up to {MAX_ASYNC_SLOTS})",
            param_hint="--concurrency",
        )
    run_worker(app, pool, node_name=node_name, loglevel=loglevel.upper(), concurrency=concurrency)


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@json_option
def db_upgrade(as_json: bool) -> None:
    """Apply every pending migration (safe to run concurrently and repeatedly)."""
    url = get_app().settings.database_url
    assert url is not None
    before, after = upgrade(url)
    if as_json:
        print_json({"from": before, "to": after})
    else:
        click.echo(
            f"database at {after}" + (" (was " + str(before) + ")" if before != after else "")
        )


@db.command("current")
@json_option
def db_current(as_json: bool) -> None:
    """Show the database's revision and the one this code needs."""
    url = get_app().settings.database_url
    assert url is not None
    current, head = current_revision(url), head_revision()
    if as_json:
        print_json({"current": current, "head": head, "up_to_date": current == head})
    else:
        click.echo(f"current {current or 'none'}, head {head}")
