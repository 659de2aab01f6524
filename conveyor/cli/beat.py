"""`conveyor beat`: the periodic schedules, sent by one leader among any number of beats."""

from __future__ import annotations

import logging

import click

from conveyor.beat.schedule import beat_schedule, describe
from conveyor.beat.service import run_beat
from conveyor.cli.common import get_app, json_option, print_json, print_table
from conveyor.cli.services import LOGLEVELS


@click.command()
@click.option("--loglevel", type=LOGLEVELS, default="INFO", show_default=True)
@click.option("--show", is_flag=True, help="Print the effective schedule and exit.")
@json_option
def beat(loglevel: str, show: bool, as_json: bool) -> None:
    """Send the periodic runs: analytics.rollup (60 s), memory.sweep (300 s), vector.maintain
    (600 s) and analytics.retention (3600 s), each routed to its pool.

    Run two or more for availability: they elect one leader with a PostgreSQL advisory lock
    and only the leader sends. When it dies, a standby takes over within
    CONVEYOR_BEAT_LOCK_RETRY_SECONDS (1 s). Change the schedule with CONVEYOR_BEAT_SCHEDULE
    ({"memory.sweep": 120, "vector.maintain": 0}: seconds, 0 or null disables) or a
    `beat_schedule` in celeryconfig.py.
    """

    app = get_app()
    entries = beat_schedule(app)
    if show:
        rows = describe(entries)
        if as_json:
            print_json([{"entry": e, "task": t, "every": every} for e, t, every in rows])
        else:
            print_table("beat schedule", ["entry", "task", "every"], rows)
        return

    logging.getLogger().setLevel(loglevel.upper())
    click.echo(
        f"conveyor beat: {len(entries)} entries; leader lock retry "
        f"{app.settings.beat_lock_retry_seconds:g}s; Ctrl-C to stop",
        err=True,
    )
    run_beat(app)
    click.echo("conveyor beat: stopped", err=True)
