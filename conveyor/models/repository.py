"""RunRepository: every read and write of agent_runs, as parameterised SQLAlchemy Core."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, Table, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from conveyor.models.runs import FINAL_STATUSES, AgentRun, RunStatus

NOTIFY_CHANNEL = "conveyor_runs"
_FINAL = [s.value for s in FINAL_STATUSES]
_runs = cast(Table, AgentRun.__table__)


class Run(BaseModel):
    """A run as callers see it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    agent: str
    pool: str
    queue: str | None = None
    status: RunStatus
    input: dict[str, Any] | None = None
    output: Any = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    attempts: int = 0
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    idempotency_key: str | None = None
    parent_id: str | None = None
    root_id: str | None = None


class NewRun(BaseModel):
    """What a producer or a worker knows about a run when it first writes it."""

    id: str
    agent: str
    pool: str
    queue: str | None = None
    input: dict[str, Any] | None = None
    idempotency_key: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    enqueued_at: datetime | None = None


class Outcome(BaseModel):
    """A state change a worker reports: retrying, or a final state."""

    run: NewRun
    status: RunStatus
    output: Any = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    worker: str | None = None
    attempts: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Claim(BaseModel):
    """The answer to a worker asking to start a run."""

    run_id: str
    claimed: bool
    status: RunStatus
    output: Any = None
    duplicate_of: str | None = None


class RunRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def enqueue(
        self, runs: Sequence[NewRun], publish: Callable[[list[NewRun]], None]
    ) -> dict[str, str]:
        """Insert queued runs and publish the new ones, all or nothing.

        Maps each id to the run that owns its effect: a run whose idempotency key is taken maps
        to the earlier run and is neither inserted nor published. `publish` runs inside the
        transaction, so a broker failure leaves no queued row behind.
        """
        if not runs:
            return {}
        rows = [{**r.model_dump(), "status": RunStatus.QUEUED.value} for r in runs]
        stmt = insert(_runs).on_conflict_do_nothing().returning(_runs.c.id)
        with self.engine.begin() as conn:
            inserted = {row.id for row in conn.execute(stmt, rows)}
            owners = {r.id: r.id for r in runs if r.id in inserted}
            missing = [r for r in runs if r.id not in inserted]
            for r in missing:
                owners[r.id] = self._owner_of(conn, r)
            publish([r for r in runs if r.id in inserted])
        return owners

    @staticmethod
    def _owner_of(conn: Any, run: NewRun) -> str:
        if run.idempotency_key is None:
            return run.id
        owner = conn.execute(
            select(_runs.c.id).where(
                _runs.c.agent == run.agent, _runs.c.idempotency_key == run.idempotency_key
            )
        ).scalar_one_or_none()
        return str(owner or run.id)

    def claim(self, run: NewRun, worker: str) -> Claim:
        """Mark a run started unless it already reached a final state (a redelivery)."""
        values = {
            **run.model_dump(),
            "status": RunStatus.STARTED.value,
            "attempts": 1,
            "worker": worker,
            "started_at": func.now(),
        }
        values["enqueued_at"] = run.enqueued_at or func.now()
        new = insert(_runs).values(values)
        stmt = new.on_conflict_do_update(
            index_elements=[_runs.c.id],
            set_={
                "status": RunStatus.STARTED.value,
                "attempts": _runs.c.attempts + 1,
                "worker": worker,
                "started_at": func.now(),
                "updated_at": func.now(),
                "queue": func.coalesce(_runs.c.queue, new.excluded.queue),
            },
            where=_runs.c.status.notin_(_FINAL),
        ).returning(_runs.c.status)
        try:
            with self.engine.begin() as conn:
                if conn.execute(stmt).first() is not None:
                    return Claim(run_id=run.id, claimed=True, status=RunStatus.STARTED)
                row = conn.execute(
                    select(_runs.c.status, _runs.c.output).where(_runs.c.id == run.id)
                ).one()
                return Claim(run_id=run.id, claimed=False, status=row.status, output=row.output)
        except IntegrityError:
            return self._duplicate(run)

    def _duplicate(self, run: NewRun) -> Claim:
        """A run whose idempotency key another run holds must not run: name that run."""
        with self.engine.connect() as conn:
            owner = self._owner_of(conn, run)
        return Claim(run_id=run.id, claimed=False, status=RunStatus.CANCELLED, duplicate_of=owner)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Write a batch of state changes in one transaction and notify waiting clients."""
        latest = {o.run.id: o for o in outcomes}
        rows = [_outcome_row(o) for o in latest.values()]
        stmt = insert(_runs)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_runs.c.id],
            set_={
                c: stmt.excluded[c]
                for c in (
                    "status",
                    "output",
                    "error_type",
                    "error_message",
                    "error_traceback",
                    "finished_at",
                    "worker",
                )
            }
            | {
                "attempts": func.greatest(_runs.c.attempts, stmt.excluded.attempts),
                "started_at": func.coalesce(_runs.c.started_at, stmt.excluded.started_at),
                "updated_at": func.now(),
            },
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)
            conn.execute(
                text("SELECT pg_notify(:channel, x) FROM unnest(CAST(:ids AS text[])) AS x"),
                {"channel": NOTIFY_CHANNEL, "ids": [f"{r['id']} {r['status']}" for r in rows]},
            )

    def cancel(self, run_id: str) -> bool:
        """Cancel a run that has not started; True if it was cancelled here."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(_runs)
                .where(
                    _runs.c.id == run_id,
                    _runs.c.status.in_([RunStatus.QUEUED.value, RunStatus.RETRYING.value]),
                )
                .values(
                    status=RunStatus.CANCELLED.value, finished_at=func.now(), updated_at=func.now()
                )
                .returning(_runs.c.id)
            ).first()
            if done is not None:
                conn.execute(
                    text("SELECT pg_notify(:c, :p)"),
                    {"c": NOTIFY_CHANNEL, "p": f"{run_id} cancelled"},
                )
        return done is not None

    def get(self, run_id: str) -> Run | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(_runs).where(_runs.c.id == run_id)).first()
        return Run.model_validate(row, from_attributes=True) if row else None

    def get_many(self, run_ids: Sequence[str]) -> dict[str, Run]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(_runs).where(_runs.c.id.in_(list(run_ids)))).all()
        return {r.id: Run.model_validate(r, from_attributes=True) for r in rows}

    def find(
        self,
        *,
        agent: str | None = None,
        status: RunStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Runs newest first, filtered by agent, status and enqueue time."""
        query = select(_runs).order_by(_runs.c.enqueued_at.desc().nulls_last()).limit(limit)
        if agent is not None:
            query = query.where(_runs.c.agent == agent)
        if status is not None:
            query = query.where(_runs.c.status == status.value)
        if since is not None:
            query = query.where(_runs.c.enqueued_at >= since)
        if until is not None:
            query = query.where(_runs.c.enqueued_at < until)
        with self.engine.connect() as conn:
            return [Run.model_validate(r, from_attributes=True) for r in conn.execute(query)]

    def count_by_status(self, agent: str | None = None) -> dict[str, int]:
        query = select(_runs.c.status, func.count()).group_by(_runs.c.status)
        if agent is not None:
            query = query.where(_runs.c.agent == agent)
        with self.engine.connect() as conn:
            return {row[0]: int(row[1]) for row in conn.execute(query)}


def _outcome_row(o: Outcome) -> dict[str, Any]:
    return {
        **o.run.model_dump(),
        "enqueued_at": o.run.enqueued_at or o.started_at,
        "status": o.status.value,
        "output": o.output,
        "error_type": o.error_type,
        "error_message": o.error_message,
        "error_traceback": o.error_traceback,
        "worker": o.worker,
        "attempts": o.attempts,
        "started_at": o.started_at,
        "finished_at": o.finished_at,
    }
