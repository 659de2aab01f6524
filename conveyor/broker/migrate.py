"""Bring a broker up to what this version's workers and plain Celery clients expect:
`conveyor broker migrate`, and the check a worker makes before it consumes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel

from conveyor.broker.amqp_queues import Progress, QueueRedeclarer, QueueReport, check_queues
from conveyor.broker.redis_keys import LEGACY_SEP, RedisKeyUpgrade
from conveyor.celery_app import ConveyorApp


class BrokerMigration(BaseModel):
    """What `conveyor broker migrate` found (dry run) or did."""

    broker: Literal["redis", "amqp"]
    dry_run: bool
    messages: dict[str, int] = {}
    """Redis: messages per legacy list (dry run) or per list they moved to."""
    bindings: int = 0
    """Redis: legacy binding entries found (dry run) or rewritten."""
    queues: list[QueueReport] = []
    """RabbitMQ: each queue conveyor declares."""

    @property
    def complete(self) -> bool:
        """Nothing is left to do (always False for a dry run that found work)."""
        if self.dry_run:
            return not self.messages and not self.bindings and self.all_queues_ok
        return all(q.status in ("ok", "redeclared") for q in self.queues)

    @property
    def all_queues_ok(self) -> bool:
        return all(q.status == "ok" for q in self.queues)

    def summary(self) -> str:
        verb = "would move" if self.dry_run else "moved"
        if self.broker == "redis":
            return (
                f"{verb} {sum(self.messages.values())} message(s) and "
                f"{'would rewrite' if self.dry_run else 'rewrote'} {self.bindings} binding "
                f"entr(ies) from the legacy Redis key scheme (sep {LEGACY_SEP!r})"
            )
        changed = [q for q in self.queues if q.status != "ok"]
        if not changed:
            return f"all {len(self.queues)} queue(s) have the arguments conveyor declares"
        return "; ".join(f"{q.queue}: {q.status}" for q in changed)


def broker_queues(app: ConveyorApp, names: Iterable[str] = ()) -> list[str]:
    """Every queue the app declares, plus `names`."""
    return sorted(set(app.amqp.queues) | set(names))


def migrate_broker(
    app: ConveyorApp,
    *,
    dry_run: bool = False,
    extra_queues: Iterable[str] = (),
    progress: Progress | None = None,
) -> BrokerMigration:
    """Move what an earlier version left (Redis) or re-declare mismatched queues (RabbitMQ)."""
    names = broker_queues(app, extra_queues)
    with app.connection_for_write() as connection:
        if app.uses_redis:
            upgrade = RedisKeyUpgrade(connection.default_channel)
            if dry_run:
                return BrokerMigration(
                    broker="redis",
                    dry_run=True,
                    messages=upgrade.pending(names),
                    bindings=upgrade.upgrade_bindings(dry_run=True),
                )
            moved = upgrade.run(names)
            return BrokerMigration(
                broker="redis", dry_run=False, messages=moved.messages, bindings=moved.bindings
            )
        redeclarer = QueueRedeclarer(connection, progress)
        known = app.amqp.queues
        reports = [redeclarer.run(known[n], dry_run=dry_run) for n in names if n in known]
        return BrokerMigration(broker="amqp", dry_run=dry_run, queues=reports)


def check_worker_queues(app: ConveyorApp, pool_name: str) -> None:
    """On RabbitMQ, declare the pool's queues before Celery does, so that one existing with
    other arguments stops the worker with one clear line (QueueArgumentsMismatch) instead of
    Celery's traceback."""
    if app.uses_redis:
        return
    names = app.settings.pool(pool_name).queues(app.settings.queue_prefix)
    with app.connection_for_write() as connection:
        check_queues(connection, [app.amqp.queues[name] for name in names])
