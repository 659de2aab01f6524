"""`conveyor dlq`: list, show, replay and purge the dead-letter queue of each pool."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from functools import partial

import click

from conveyor.cli.common import Age, get_app, json_option, print_json, print_table
from conveyor.dlq.entry import DeadLetterEntry
from conveyor.dlq.publish import publisher
from conveyor.dlq.store import DeadLetterStore, ReplayOutcome
from conveyor.errors import ConveyorError

BODY_PREVIEW_CHARS = 2000

pool_option = click.option("--pool", help="Only this pool's dead letters.")


def _store(pool: str | None) -> DeadLetterStore:
    """The store, after checking that `pool` (if given) is a configured pool."""
    app = get_app()
    if pool is not None:
        app.settings.pool(pool)
    return app.dead_letters


def _when(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else None


def _existing(store: DeadLetterStore, ids: tuple[int, ...]) -> list[DeadLetterEntry]:
    """The entries of `ids`, or one error naming every id that does not exist."""
    found = {i: store.get(i) for i in dict.fromkeys(ids)}
    missing = [str(i) for i, entry in found.items() if entry is None]
    if missing:
        raise ConveyorError(f"no dead letter with id {', '.join(missing)}; see `conveyor dlq list`")
    return [e for e in found.values() if e is not None]


@click.group()
def dlq() -> None:
    """The dead-letter queue of each pool: runs that ran out of retries or whose worker kept
    dying (more than CONVEYOR_MAX_DELIVERIES deliveries), and messages a worker refused (not
    JSON, unknown task, missing fields, larger than CONVEYOR_MAX_MESSAGE_BYTES).

    \b
    conveyor dlq list --pool default        what is there
    conveyor dlq show 42                    one entry, with its error history
    conveyor dlq replay 42                  run it again (same run id), once
    conveyor dlq purge --older-than 7d --yes
    """


@dlq.command(name="list")
@pool_option
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--replayed", is_flag=True, help="Include entries already replayed.")
@json_option
def list_(pool: str | None, limit: int, replayed: bool, as_json: bool) -> None:
    """List dead letters, newest first: pending ones unless --replayed."""
    found = _store(pool).find(pool=pool, limit=limit, replayed=replayed)
    if as_json:
        print_json(found)
        return
    rows = [
        (
            e.id,
            e.pool,
            e.reason.value,
            e.task,
            e.run_id,
            len(e.errors),
            _when(e.created_at),
            _when(e.replayed_at),
            e.detail[:60],
        )
        for e in found
    ]
    columns = ["id", "pool", "reason", "task", "run", "errors", "created", "replayed", "detail"]
    print_table(f"{len(found)} dead letter(s)", columns, rows)


@dlq.command()
@click.argument("entry_id", metavar="ID", type=int)
@json_option
def show(entry_id: int, as_json: bool) -> None:
    """Show one dead letter: its message and every recorded error of its run."""
    entry = _existing(_store(None), (entry_id,))[0]
    if as_json:
        print_json(entry)
        return
    for name in ("id", "pool", "queue", "reason", "detail", "task", "run_id", "content_type"):
        click.echo(f"{name}: {getattr(entry, name)}")
    click.echo(f"created: {_when(entry.created_at)}  replayed: {_when(entry.replayed_at) or '-'}")
    click.echo(f"replayable: {'yes' if entry.replayable else 'no'}")
    click.echo(f"headers: {json.dumps(entry.headers, sort_keys=True)}")
    truncated = " (truncated when stored)" if entry.body_truncated else ""
    click.echo(f"body: {entry.body_bytes} bytes{truncated}")
    if entry.body:
        click.echo(entry.body[:BODY_PREVIEW_CHARS])
    print_table(
        f"error history ({len(entry.errors)})",
        ["attempt", "status", "type", "message", "worker", "at"],
        [
            tuple(e.get(k) for k in ("attempt", "status", "type", "message", "worker", "at"))
            for e in entry.errors
        ],
    )


@dlq.command()
@click.argument("ids", metavar="[ID]...", nargs=-1, type=int)
@pool_option
@click.option("--all", "all_pools", is_flag=True, help="Every pending entry of every pool.")
@json_option
def replay(ids: tuple[int, ...], pool: str | None, all_pools: bool, as_json: bool) -> None:
    """Publish dead-lettered runs again, with the same run id and a fresh retry budget.

    Give ids, or --pool, or --all. The run goes back to queued and the entry is marked
    replayed in the same transaction as the publish, so replaying twice (even at once)
    publishes once. Entries without a whole task message (not_json, too_large,
    missing_fields) and runs that have since succeeded (or were cancelled) are skipped.
    """
    if bool(ids) + (pool is not None) + all_pools != 1:
        raise click.UsageError("give entry ids, or --pool POOL, or --all (exactly one)")
    app = get_app()
    store = _store(pool)
    if ids:
        refused = [e for e in _existing(store, ids) if e.replayed_at is None and not e.replayable]
        if refused:
            raise ConveyorError(
                "cannot replay "
                + "; ".join(f"{e.id} ({e.reason.value}: {e.detail})" for e in refused)
                + ": the message is not a whole task message; purge it instead"
            )
    chosen = list(dict.fromkeys(ids)) if ids else store.pending_ids(pool)
    publish = publisher(app)
    outcomes: dict[int, ReplayOutcome] = {}
    with click.progressbar(chosen, label="replaying", file=sys.stderr) as progress:
        for entry_id in progress:
            outcomes[entry_id] = store.replay(entry_id, publish)
    replayed = [i for i, o in outcomes.items() if o is ReplayOutcome.REPLAYED]
    skipped = {i: o.value for i, o in outcomes.items() if o is not ReplayOutcome.REPLAYED}
    if as_json:
        print_json({"replayed": replayed, "skipped": skipped})
        return
    for entry_id, why in skipped.items():
        click.echo(f"{entry_id}: skipped ({why.replace('_', ' ')})")
    click.echo(f"replayed {len(replayed)} of {len(chosen)} dead letter(s)")


@dlq.command()
@click.argument("ids", metavar="[ID]...", nargs=-1, type=int)
@pool_option
@click.option("--older-than", type=Age(), help="Only entries created longer ago (15m, 2h, 7d).")
@click.option("--all", "everything", is_flag=True, help="Every entry of every pool.")
@click.option("--yes", is_flag=True, help="Confirm deleting more than one entry by filter.")
@json_option
def purge(
    ids: tuple[int, ...],
    pool: str | None,
    older_than: timedelta | None,
    everything: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete dead letters for good: by id, or by --pool and/or --older-than, or --all.

    Filters combine (--pool default --older-than 7d). Deleting more than one entry by
    filter needs --yes; ids are explicit and need none.
    """
    filtered = pool is not None or older_than is not None
    if not (ids or filtered or everything) or (everything and (ids or filtered)):
        raise click.UsageError("give entry ids, --pool and/or --older-than, or --all")
    store = _store(pool)
    if ids:
        _existing(store, ids)
    cutoff = datetime.now(UTC) - older_than if older_than is not None else None
    select = partial(store.purge, ids=ids, pool=pool, older_than=cutoff)
    if not ids and not yes:
        matching = select(dry_run=True)
        if len(matching) > 1:
            raise ConveyorError(
                f"this would delete {len(matching)} dead letters; add --yes to confirm"
            )
    purged = select()
    if as_json:
        print_json({"purged": purged})
    else:
        click.echo(f"purged {len(purged)} dead letter(s)")
