"""The `conveyor` command."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click
from amqp.exceptions import AccessRefused
from amqp.exceptions import ConnectionError as AMQPConnectionError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError as DatabaseError

from conveyor.cli.beat import beat
from conveyor.cli.broker import broker
from conveyor.cli.demo import demo
from conveyor.cli.dlq import dlq
from conveyor.cli.flower import flower
from conveyor.cli.health import health
from conveyor.cli.metrics import autoscale, exporter, status
from conveyor.cli.report import report
from conveyor.cli.runs import cancel, runs, submit
from conveyor.cli.services import db, down, up, worker
from conveyor.errors import ConveyorError
from conveyor.redaction import install_redaction


class _Conveyor(click.Group):
    """Turns any expected failure into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            _fail(str(exc))
        except (
            BrokerError,
            RedisConnectionError,
            ConnectionError,
            AMQPConnectionError,
            AccessRefused,
        ) as exc:
            _fail(f"broker unreachable: {exc}")
        except DatabaseError as exc:
            _fail(f"database unreachable: {str(exc.orig).strip().splitlines()[0]}")


def _fail(message: str) -> None:
    click.echo(f"conveyor: {message}", err=True)
    sys.exit(1)


@click.group(cls=_Conveyor, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level to stderr.")
def cli(verbose: bool) -> None:
    """Run AI agents as Celery tasks on worker pools, with run history in PostgreSQL.

    With no CONVEYOR_BROKER_URL / CONVEYOR_DATABASE_URL set, an embedded Redis and
    PostgreSQL start under CONVEYOR_DATA_DIR (default ./.conveyor) on first need and
    are reused by later commands; `conveyor down` stops them.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_redaction()


for command in (
    up,
    down,
    worker,
    db,
    submit,
    runs,
    status,
    cancel,
    demo,
    flower,
    exporter,
    autoscale,
    beat,
    report,
    health,
    dlq,
    broker,
):
    cli.add_command(command)


def main() -> None:
    """Entry point. The working directory joins the import path, as with `celery`, so a
    local celeryconfig.py and agent modules are found."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    cli(prog_name="conveyor")
