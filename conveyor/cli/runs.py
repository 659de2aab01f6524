"""Commands about runs: submit, runs, status, cancel."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from conveyor.cli.common import get_app, json_option, parse_age, print_json, print_table
from conveyor.client import Client
from conveyor.errors import ConveyorError
from conveyor.runs.status import RunStatus


class _When(click.ParamType[datetime, Any]):
    """A time: ISO 8601, or an age such as 30s, 15m, 2h, 7d."""

    name = "TIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        if (age := parse_age(value)) is not None:
            return datetime.now(UTC) - age
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is neither ISO 8601 nor an age like 15m, 2h, 7d", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _payload(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON: {exc.msg} at character {exc.pos}", param_hint="JSON"
        ) from None
    if not isinstance(data, dict):
        raise click.BadParameter(
            f"must be a JSON object, got {type(data).__name__}", param_hint="JSON"
        )
    return data


@click.command()
@click.argument("agent")
@click.argument("payload", metavar="JSON", default="{}")
@click.option("--wait", is_flag=True, help="Wait for the run to finish and print its output.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait with --wait.",
)
@click.option("--idempotency-key", help="A second submit with the same key returns the first run.")
@click.option("--priority", type=click.IntRange(0, 9), help="0..9, 9 the most urgent.")
@click.option(
    "--countdown", type=click.FloatRange(min=0), help="Start no sooner than this many seconds."
)
@json_option
def submit(
    agent: str,
    payload: str,
    wait: bool,
    timeout: float,
    idempotency_key: str | None,
    priority: int | None,
    countdown: float | None,
    as_json: bool,
) -> None:
    """Submit one run of AGENT with the JSON object as its input.

    \b
    Example:
      conveyor submit conveyor.ping '{"x": 1}' --wait
    """
    data = _payload(payload)
    client = Client(get_app())
    run_id = client.submit(
        agent, data, idempotency_key=idempotency_key, priority=priority, countdown=countdown
    )
    if not wait:
        print_json({"run_id": run_id}) if as_json else click.echo(run_id)
        return
    run = client.wait(run_id, timeout)
    if as_json:
        print_json(run)
    elif run.status is RunStatus.SUCCEEDED:
        click.echo(json.dumps(run.output, indent=2))
    if run.status is not RunStatus.SUCCEEDED:
        raise ConveyorError(f"run {run_id} {run.status.value}: {run.error_message}")


@click.command()
@click.option("--agent", help="Only runs of this agent.")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), help="Only this status.")
@click.option("--since", type=_When(), help="Enqueued at or after (ISO 8601 or an age: 15m, 2h).")
@click.option("--until", type=_When(), help="Enqueued before (ISO 8601 or an age).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@json_option
def runs(
    agent: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List recorded runs, newest first."""
    found = get_app().runs.find(
        agent=agent,
        status=RunStatus(status) if status else None,
        since=since,
        until=until,
        limit=limit,
    )
    if as_json:
        print_json(found)
        return
    rows = [
        (
            r.id,
            r.agent,
            r.status.value,
            r.attempts,
            r.worker,
            r.enqueued_at.strftime("%Y-%m-%d %H:%M:%S") if r.enqueued_at else None,
            f"{(r.finished_at - r.enqueued_at).total_seconds() * 1000:.0f} ms"
            if r.finished_at and r.enqueued_at
            else None,
            (r.error_message or "")[:60],
        )
        for r in found
    ]
    print_table(
        f"{len(found)} run(s)",
        ["id", "agent", "status", "attempts", "worker", "enqueued", "latency", "error"],
        rows,
    )


@click.command()
@click.argument("run_id")
@click.option("--terminate", is_flag=True, help="Also kill the run if it has started.")
@json_option
def cancel(run_id: str, terminate: bool, as_json: bool) -> None:
    """Cancel a run that has not finished."""
    client = Client(get_app())
    if client.get(run_id) is None:
        raise ConveyorError(f"no run with id {run_id}")
    cancelled = client.cancel(run_id, terminate=terminate)
    if as_json:
        print_json({"run_id": run_id, "cancelled": cancelled})
    else:
        click.echo(f"{run_id}: {'cancelled' if cancelled else 'revoked (it had already started)'}")
