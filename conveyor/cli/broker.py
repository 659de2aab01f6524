"""`conveyor broker`: bring the broker up to this version (key scheme, queue arguments)."""

from __future__ import annotations

import sys

import click

from conveyor.broker.migrate import migrate_broker
from conveyor.cli.common import get_app, json_option, print_json


@click.group()
def broker() -> None:
    """The broker as conveyor's workers and plain Celery clients share it."""


@broker.command()
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only report what would change (on RabbitMQ a queue that does not exist yet is "
    "declared, as a worker would).",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="Also migrate this queue (repeatable); conveyor's own queues always are.",
)
@json_option
def migrate(dry_run: bool, queues: tuple[str, ...], as_json: bool) -> None:
    """Move what an earlier conveyor left in the broker to what this version reads.

    \b
    Redis: messages in priority lists named with conveyor's earlier separator (`default:3`)
    move to kombu's own (`default\\x06\\x163`), the lists plain Celery clients write, and
    binding entries are rewritten. Workers also do this at start and then every
    CONVEYOR_LEGACY_SWEEP_SECONDS (30).
    RabbitMQ: a queue that exists with other arguments than conveyor declares (the
    catch-all `celery` queue without x-max-priority, say) is declared anew: its messages
    wait in `<queue>.conveyor-redeclare` meanwhile and none is lost. Stop the workers of
    the earlier version first; a queue they still consume is reported busy.

    Safe to run again, and from several places at once. Exits 1 when a queue is left busy.
    """
    app = get_app()

    def progress(queue: str, moved: int) -> None:
        click.echo(f"{queue}: {moved} message(s) moved", err=True)

    result = migrate_broker(
        app, dry_run=dry_run, extra_queues=queues, progress=None if as_json else progress
    )
    if as_json:
        print_json(result.model_dump(mode="json") | {"complete": result.complete})
    else:
        click.echo(result.summary())
        for report in result.queues:
            if report.detail:
                click.echo(f"{report.queue}: {report.detail}", err=True)
    if not result.dry_run and not result.complete:
        sys.exit(1)
