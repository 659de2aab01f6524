"""DeadLetterStore: every read and write of dead_letters, parameterised, per pool."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import Engine, Table, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import ColumnElement

from conveyor.dlq.entry import DeadLetterEntry, NewDeadLetter, error_entry
from conveyor.dlq.table import REPLAYABLE, DeadLetter
from conveyor.models import jsonb
from conveyor.runs.notify import NOTIFY_CHANNEL
from conveyor.runs.status import FINAL_STATUSES, RunStatus
from conveyor.runs.table import AgentRun

_letters = cast(Table, DeadLetter.__table__)
_runs = cast(Table, AgentRun.__table__)
_LISTED = [c for c in _letters.c if c.name != "body"]
_RERUNNABLE = tuple(
    s.value for s in (RunStatus.FAILED, RunStatus.REJECTED, RunStatus.QUEUED, RunStatus.STARTED)
)
"""Run states a replay may send back to `queued`: never a success or a cancel. (A rejected
run with a replayable entry is one whose task was unknown when it arrived.)"""

_ADD = text("""
INSERT INTO dead_letters (pool, queue, run_id, task, reason, detail, headers, properties, body,
                          body_bytes, body_truncated, content_type, errors)
SELECT :pool, :queue, :run_id, :task, :reason, :detail, CAST(:headers AS jsonb),
       CAST(:properties AS jsonb), :body, :body_bytes, :body_truncated, :content_type,
       coalesce((SELECT r.errors FROM agent_runs r WHERE r.id = :run_id), '[]'::jsonb)
       || CAST(:errors AS jsonb)
ON CONFLICT DO NOTHING
RETURNING id
""")


class ReplayOutcome(enum.StrEnum):
    """What a replay did with one entry."""

    REPLAYED = "replayed"
    """Published again; the run is back to queued."""
    ALREADY_REPLAYED = "already_replayed"
    """Replayed before (maybe concurrently): not published again."""
    NOT_REPLAYABLE = "not_replayable"
    """No whole task message to publish (not_json, too_large, missing_fields)."""
    RUN_FINISHED = "run_finished"
    """The run has since succeeded or been cancelled: running it again would be wrong."""
    UNKNOWN = "unknown"
    """No entry with that id."""


class DeadLetterStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def add(self, letter: NewDeadLetter) -> int | None:
        """Write a dead letter, its history being the run's recorded errors then `errors`.
        A refused message's run, if it was recorded as queued, becomes `rejected`.

        A run has at most one pending entry, so a worker that dead-letters a run twice (it
        died between this write and recording the run) writes it once; None then.
        """
        params = letter.model_dump(mode="json")
        for name in ("headers", "properties", "errors"):
            params[name] = jsonb.dumps(params[name])
        with self.engine.begin() as conn:
            added = conn.execute(_ADD, params).scalar()
            if letter.reason.error_type is not None and letter.run_id is not None:
                self._reject_run(conn, letter.run_id, letter.reason.error_type, letter.detail)
        return None if added is None else int(added)

    @staticmethod
    def _reject_run(conn: Any, run_id: str, error_type: str, detail: str) -> None:
        """A submitted run whose message was refused would stay queued forever: reject it,
        with the refusal in its error history, and wake clients waiting on it."""
        refusal = error_entry(0, error_type, detail, None, RunStatus.REJECTED.value)
        history = func.coalesce(_runs.c.errors, sa.literal_column("'[]'::jsonb")).op("||")(
            sa.bindparam("refusal", jsonb.storable([refusal]), type_=JSONB)
        )
        conn.execute(
            update(_runs)
            .where(_runs.c.id == run_id, _runs.c.status.not_in([s.value for s in FINAL_STATUSES]))
            .values(
                status=RunStatus.REJECTED.value,
                error_type=error_type,
                error_message=detail,
                error_traceback=None,
                finished_at=func.now(),
                updated_at=func.now(),
                errors=history,
            )
            .returning(func.pg_notify(NOTIFY_CHANNEL, _runs.c.id + f" {RunStatus.REJECTED.value}"))
        ).all()

    def get(self, entry_id: int) -> DeadLetterEntry | None:
        with self._autocommit.connect() as conn:
            row = conn.execute(select(_letters).where(_letters.c.id == entry_id)).first()
        return None if row is None else DeadLetterEntry.model_validate(row)

    def find(
        self, *, pool: str | None = None, limit: int = 50, replayed: bool = False
    ) -> list[DeadLetterEntry]:
        """Entries newest first, without their bodies; pending only unless `replayed`."""
        query = select(*_LISTED).order_by(_letters.c.id.desc()).limit(limit)
        if pool is not None:
            query = query.where(_letters.c.pool == pool)
        if not replayed:
            query = query.where(_letters.c.replayed_at.is_(None))
        with self._autocommit.connect() as conn:
            return [DeadLetterEntry.model_validate(r) for r in conn.execute(query)]

    def pending_ids(self, pool: str | None = None) -> list[int]:
        """Ids of the entries not yet replayed, oldest first (all pools when `pool` is None)."""
        query = select(_letters.c.id).where(_letters.c.replayed_at.is_(None))
        if pool is not None:
            query = query.where(_letters.c.pool == pool)
        with self._autocommit.connect() as conn:
            return list(conn.execute(query.order_by(_letters.c.id)).scalars())

    def sizes(self) -> dict[str, int]:
        """Pending entries per pool (the exporter's conveyor_dlq_size)."""
        query = (
            select(_letters.c.pool, func.count())
            .where(_letters.c.replayed_at.is_(None))
            .group_by(_letters.c.pool)
        )
        with self._autocommit.connect() as conn:
            return {row[0]: int(row[1]) for row in conn.execute(query)}

    def replay(self, entry_id: int, publish: Callable[[DeadLetterEntry], None]) -> ReplayOutcome:
        """Mark the entry replayed, send its run back to queued, and publish it, in one
        transaction: a failed publish leaves the entry pending, and a second replay (even a
        concurrent one) finds it taken and publishes nothing. A worker that picks the message
        up before the commit waits on the run's row lock and then sees it queued."""
        with self.engine.begin() as conn:
            row = conn.execute(
                update(_letters)
                .where(
                    _letters.c.id == entry_id,
                    _letters.c.replayed_at.is_(None),
                    _letters.c.reason.in_([r.value for r in REPLAYABLE]),
                    _letters.c.body_truncated.is_(False),
                    _letters.c.run_id.is_not(None),
                    _letters.c.task.is_not(None),
                )
                .values(replayed_at=func.now())
                .returning(_letters)
            ).first()
            if row is None:
                return self._why_not(conn, entry_id)
            entry = DeadLetterEntry.model_validate(row)
            status = conn.execute(
                select(_runs.c.status).where(_runs.c.id == entry.run_id).with_for_update()
            ).scalar()
            if status is not None and status not in _RERUNNABLE:
                conn.rollback()
                return ReplayOutcome.RUN_FINISHED
            conn.execute(
                update(_runs)
                .where(_runs.c.id == entry.run_id)
                .values(
                    status=RunStatus.QUEUED.value,
                    deliveries=0,
                    finished_at=None,
                    error_type=None,
                    error_message=None,
                    error_traceback=None,
                    updated_at=func.now(),
                )
            )
            publish(entry)
        return ReplayOutcome.REPLAYED

    @staticmethod
    def _why_not(conn: Any, entry_id: int) -> ReplayOutcome:
        found = conn.execute(
            select(_letters.c.replayed_at).where(_letters.c.id == entry_id)
        ).first()
        if found is None:
            return ReplayOutcome.UNKNOWN
        return (
            ReplayOutcome.NOT_REPLAYABLE
            if found.replayed_at is None
            else ReplayOutcome.ALREADY_REPLAYED
        )

    def purge(
        self,
        *,
        ids: Sequence[int] = (),
        pool: str | None = None,
        older_than: datetime | None = None,
        dry_run: bool = False,
    ) -> list[int]:
        """Delete entries matching every filter given (ids, pool, created before
        `older_than`); with no filter, all. Returns their ids; `dry_run` deletes nothing."""
        where: list[ColumnElement[bool]] = []
        if ids:
            where.append(_letters.c.id.in_(list(ids)))
        if pool is not None:
            where.append(_letters.c.pool == pool)
        if older_than is not None:
            where.append(_letters.c.created_at < older_than)
        with self._autocommit.connect() as conn:
            if dry_run:
                return list(conn.execute(select(_letters.c.id).where(*where)).scalars())
            return list(
                conn.execute(delete(_letters).where(*where).returning(_letters.c.id)).scalars()
            )
