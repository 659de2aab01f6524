"""`conveyor flower`: Flower on conveyor's app, behind basic auth outside the embedded mode."""

from __future__ import annotations

import errno
import ipaddress

import click

from conveyor.celery_app import ConveyorApp
from conveyor.cli.common import get_app
from conveyor.config import Settings, load_settings
from conveyor.errors import ConfigError, ConveyorError

AUTH_VARIABLE = "CONVEYOR_FLOWER_BASIC_AUTH"
BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def embedded_mode(settings: Settings) -> bool:
    """No broker or database URL is configured: everything is local to this machine."""
    return settings.broker_url is None and settings.database_url is None


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_access(settings: Settings, address: str) -> None:
    """Refuse to serve Flower without basic auth, except embedded and on loopback."""
    if settings.flower_basic_auth is not None:
        return
    if not embedded_mode(settings):
        raise ConfigError(
            f"{AUTH_VARIABLE} is not set; Flower needs basic auth (user:password) "
            "when CONVEYOR_BROKER_URL or CONVEYOR_DATABASE_URL is set"
        )
    if not is_loopback(address):
        raise ConfigError(
            f"{AUTH_VARIABLE} is not set; without basic auth Flower listens only on "
            f"loopback, not {address}"
        )


def flower_argv(settings: Settings, port: int, address: str, url_prefix: str | None) -> list[str]:
    """Flower's own options; the credentials stay in this process (never in a process title)."""
    argv = [f"--port={port}", f"--address={address}"]
    if url_prefix and url_prefix.strip("/"):
        argv.append(f"--url_prefix={url_prefix.strip('/')}")
    if settings.flower_basic_auth is not None:
        argv.append(f"--basic_auth={settings.flower_basic_auth.get_secret_value()}")
    return argv


def run_flower(app: ConveyorApp, argv: list[str]) -> None:
    """Run Flower's command in this process on `app`, until SIGINT or SIGTERM.

    It is invoked under a bare `celery` context rather than through `app.start()`, whose
    group would read APP, BROKER_URL and the like from the environment and replace the app.
    """
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery
    from flower.command import flower as command

    parent = click.Context(
        celery, info_name="celery", obj=CLIContext(app=app, no_color=True, workdir=None)
    )
    with command.make_context("flower", list(argv), parent=parent) as ctx:
        command.invoke(ctx)


@click.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=5555,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on; 0.0.0.0 for all (needs basic auth).",
)
@click.option("--url-prefix", help="Serve under this path, e.g. flower behind a proxy at /flower.")
def flower(port: int, address: str, url_prefix: str | None) -> None:
    """Run Flower (live workers, tasks and queue lengths) on conveyor's app, in the foreground.

    Basic auth comes from CONVEYOR_FLOWER_BASIC_AUTH (user:password[,user2:password2],
    passwords of 8+ characters). It is required whenever CONVEYOR_BROKER_URL or
    CONVEYOR_DATABASE_URL is set; only the embedded mode may run without it, and then only
    on a loopback address (Flower then keeps its /api closed unless FLOWER_UNAUTHENTICATED_API
    is set). Other FLOWER_* variables and a flowerconfig.py still reach Flower. Its in-memory
    view complements `conveyor runs`, the durable history.
    """
    settings = load_settings()
    check_access(settings, address)
    app = get_app()
    auth = "basic auth" if settings.flower_basic_auth else "no auth: embedded mode, loopback"
    host = f"[{address}]" if ":" in address else address
    prefix = f"{url_prefix.strip('/')}/" if url_prefix and url_prefix.strip("/") else ""
    click.echo(f"conveyor flower: http://{host}:{port}/{prefix} ({auth}); Ctrl-C to stop", err=True)
    try:
        run_flower(app, flower_argv(settings, port, address, url_prefix))
    except OSError as exc:
        if exc.errno not in BIND_ERRORS:
            raise
        raise ConveyorError(f"cannot listen on {address}:{port}: {exc.strerror}") from None
