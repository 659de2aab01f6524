"""`conveyor health`: one-shot probes for container health checks and Kubernetes probes.

Each probe prints one line (or one JSON object with --json) and exits 0 when healthy, 1 when
not. A probe never starts the embedded services: unconfigured, it checks the ones recorded
under CONVEYOR_DATA_DIR and reports them unhealthy if they are not running.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import click
from celery import Celery
from celery.utils.nodenames import default_nodename, host_format
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from conveyor.agents import Registry
from conveyor.app import celery_settings
from conveyor.config import Settings, load_settings
from conveyor.embedded import Embedded
from conveyor.errors import ConveyorError
from conveyor.models.migrate import head_revision, not_migrated, revision_of

DEFAULT_TIMEOUT = 5.0
EXPORTER_URL = "http://127.0.0.1:9810/healthz"
FLOWER_URL = "http://127.0.0.1:5555/healthcheck"
_DETAIL_LIMIT = 300


class Unhealthy(Exception):
    """The probe's target did not answer as a healthy one does; the message says why."""


@dataclass
class Result:
    check: str
    target: str
    healthy: bool
    detail: str
    seconds: float


timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(0.1, 300),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Give up after this many seconds.",
)
json_flag = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _DETAIL_LIMIT else line[: _DETAIL_LIMIT - 1] + "…"


def report(check: str, target: str, probe: Callable[[], str], as_json: bool) -> None:
    """Run `probe` (which returns a detail or raises), print the outcome, exit 0 or 1."""
    t0 = time.perf_counter()
    try:
        detail, healthy = probe(), True
    except (Unhealthy, ConveyorError) as exc:
        detail, healthy = str(exc), False
    except Exception as exc:  # any failure of a probe is an unhealthy answer, never a trace
        detail, healthy = f"{type(exc).__name__}: {exc}", False
    result = Result(check, target, healthy, _one_line(detail), round(time.perf_counter() - t0, 3))
    if as_json:
        click.echo(json.dumps(asdict(result)))
    else:
        state = "healthy" if healthy else "unhealthy"
        name = check if target == check else f"{check} {target}"
        click.echo(f"{name}: {state}: {result.detail}", err=not healthy)
    raise SystemExit(0 if healthy else 1)


def probe_settings() -> Settings:
    """The settings with the broker and database resolved, without starting anything."""
    settings = load_settings()
    if settings.broker_url is not None and settings.database_url is not None:
        return settings
    state = Embedded(settings.data_dir).read_state()
    if state is None:
        raise Unhealthy(
            f"no CONVEYOR_BROKER_URL / CONVEYOR_DATABASE_URL and no embedded services "
            f"running under {settings.data_dir} (a probe never starts them)"
        )
    return settings.model_copy(
        update={
            "broker_url": settings.broker_url or state.redis_url,
            "database_url": settings.database_url or state.postgres_url,
        }
    )


def probe_app(settings: Settings) -> Celery:
    """A bare Celery app with the Celery settings `create_app` gives conveyor's app (queue
    prefix, control exchange, transport options, celeryconfig.py overrides), but no agents:
    cheap to build."""
    app = Celery("conveyor-health", set_as_current=False)
    app.config_from_object(celery_settings(settings, Registry()))
    return app


def check_broker(app: Celery, timeout: float) -> None:
    """Open a broker connection (Redis: and PING it), once, within `timeout`."""
    try:
        with app.connection_for_read(connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=math.ceil(timeout))
    except Exception as exc:
        raise Unhealthy(f"broker unreachable: {exc}") from None


def node_name(pool: str, node: str | None) -> str:
    """The node name `conveyor worker --pool POOL` takes here (POOL@HOSTNAME), or `node`
    read as Celery reads --hostname (%h, %n and %d expand; a name without @ is a host,
    celery@NAME)."""
    return host_format(default_nodename(node or f"{pool}@%h"))


def ping_worker(app: Celery, node: str, timeout: float) -> str:
    """Ask one worker node for a control ping. Its consumer answers from the worker's event
    loop, so a reply proves both the worker's broker connection and that loop are alive."""
    t0 = time.monotonic()
    check_broker(app, timeout)
    left = max(0.1, timeout - (time.monotonic() - t0))
    replies = app.control.ping(destination=[node], timeout=left) or []
    for reply in replies:
        if node in reply:
            answer = reply[node]
            if isinstance(answer, dict) and answer.get("ok") == "pong":
                return f"pong in {time.monotonic() - t0:.3f}s"
            raise Unhealthy(f"unexpected reply {answer!r}")
    raise Unhealthy(f"no reply to a ping within {timeout:g}s")


def check_database(url: str, timeout: float) -> str:
    """Connect, and compare the schema revision with the one this code needs."""

    engine = create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": max(1, round(timeout))}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = revision_of(conn)
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise Unhealthy(f"database unreachable: {cause}") from None
    finally:
        engine.dispose()
    head = head_revision()
    if current != head:
        raise Unhealthy(str(not_migrated(engine.url, current)))
    where = engine.url.render_as_string(hide_password=True)
    return f"{where} reachable, schema at {head}"


def check_http(url: str, timeout: float) -> str:
    """GET `url`; healthy on 2xx. A JSON body's fields become the detail."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read(4096)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(4096)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unhealthy(f"no answer: {reason}") from None
    detail = _describe_body(body)
    if not 200 <= status < 300:
        raise Unhealthy(f"HTTP {status}" + (f": {detail}" if detail else ""))
    return f"HTTP {status}" + (f": {detail}" if detail else "")


def _describe_body(body: bytes) -> str:
    text = body.decode(errors="replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        return ", ".join(f"{k} {v}" for k, v in data.items())
    return text


def _check_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL")
    return value


@click.group()
def health() -> None:
    """Probes for health checks: exit 0 when healthy, 1 when not, with one line.

    \b
    worker     this container's worker answers a control ping through the broker
    broker     a broker connection opens
    database   the database answers and its schema is at this code's revision
    exporter   the exporter's /healthz answers 200 (it reads the broker)
    flower     Flower's /healthcheck answers 200

    A probe never starts the embedded services.
    """


@health.command("worker")
@click.option(
    "--pool",
    default="default",
    show_default=True,
    help="The pool of the worker; its node is POOL@HOSTNAME, as `conveyor worker` names it.",
)
@click.option(
    "--node",
    help="The worker's node name instead (as given to `conveyor worker --name`; "
    "%h expands to this host's name).",
)
@timeout_option
@json_flag
def health_worker(pool: str, node: str | None, timeout: float, as_json: bool) -> None:
    """Ping this host's worker of POOL through the broker.

    The reply comes from the worker's consumer on its event loop, so it proves the worker's
    broker connection and that loop are alive (a worker stuck or cut off from the broker does
    not answer). Run it where the worker runs: the node name holds the host name.
    """
    target = node_name(pool, node)

    def probe() -> str:
        settings = probe_settings()
        settings.pool(pool)
        return ping_worker(probe_app(settings), target, timeout)

    report("worker", target, probe, as_json)


@health.command("broker")
@timeout_option
@json_flag
def health_broker(timeout: float, as_json: bool) -> None:
    """Open a connection to the broker (CONVEYOR_BROKER_URL)."""
    target = "broker"

    def probe() -> str:
        app = probe_app(probe_settings())
        check_broker(app, timeout)
        with app.connection_for_read() as conn:
            where = conn.as_uri()  # the password masked
        return f"connected to {where}"

    report("broker", target, probe, as_json)


@health.command("database")
@timeout_option
@json_flag
def health_database(timeout: float, as_json: bool) -> None:
    """Connect to the database (CONVEYOR_DATABASE_URL) and check its schema revision."""

    def probe() -> str:
        url = probe_settings().database_url
        assert url is not None
        return check_database(url, timeout)

    report("database", "database", probe, as_json)


@health.command("exporter")
@click.option(
    "--url",
    default=EXPORTER_URL,
    show_default=True,
    callback=_check_url,
    help="The exporter's /healthz.",
)
@timeout_option
@json_flag
def health_exporter(url: str, timeout: float, as_json: bool) -> None:
    """GET the exporter's /healthz: 200 once it has read the broker, 503 if it cannot."""
    report("exporter", url, lambda: check_http(url, timeout), as_json)


@health.command("flower")
@click.option(
    "--url",
    default=FLOWER_URL,
    show_default=True,
    callback=_check_url,
    help="Flower's /healthcheck (add the --url-prefix if Flower has one).",
)
@timeout_option
@json_flag
def health_flower(url: str, timeout: float, as_json: bool) -> None:
    """GET Flower's /healthcheck (open even when basic auth is on)."""
    report("flower", url, lambda: check_http(url, timeout), as_json)
