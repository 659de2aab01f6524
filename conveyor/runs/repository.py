"""RunRepository: every read and write of agent_runs, parameterised (Core or runs.statements)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from psycopg.errors import UndefinedColumn, UndefinedTable
from sqlalchemy import Connection, Engine, Table, func, select, text, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, ProgrammingError

from conveyor.models import jsonb
from conveyor.models.migrate import schema_error
from conveyor.runs.notify import NOTIFY_CHANNEL, ended
from conveyor.runs.records import Claim, NewRun, Outcome, Run
from conveyor.runs.statements import CLAIM, ENQUEUE, RECORD
from conveyor.runs.status import RunStatus
from conveyor.runs.table import AgentRun

_runs = cast(Table, AgentRun.__table__)
log = logging.getLogger(__name__)
_JSON_FIELDS = ("input", "output")


class RunRepository:
    """A missing table or column (an unmigrated database) raises NotMigrated, naming the
    database and the command that fixes it, from every method."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._schema_seen = False

    @contextmanager
    def _connect(self, *, transaction: bool = False) -> Iterator[Connection]:
        """A connection (autocommit, or one transaction) whose schema errors read as such."""
        try:
            with self.engine.begin() if transaction else self._autocommit.connect() as conn:
                yield conn
        except ProgrammingError as exc:
            if not isinstance(exc.orig, UndefinedTable | UndefinedColumn):
                raise
            if (error := schema_error(self.engine)) is None:
                raise
            raise error from None

    def _check_schema(self) -> None:
        """NotMigrated before the first publish that is recorded only after it. A database
        out of reach fails nothing here: `_record_queued` deals with that."""
        if self._schema_seen:
            return
        try:
            with self._connect() as conn:
                conn.execute(select(_runs).limit(0))
        except (OperationalError, InterfaceError):
            return
        self._schema_seen = True

    def enqueue(
        self, runs: Sequence[NewRun], publish: Callable[[list[NewRun]], None]
    ) -> dict[str, str]:
        """Record runs as queued and publish them; maps each id to the run that owns its effect.

        Runs with an idempotency key are inserted and published in one transaction, so a key
        is never taken by a run that was not published; a run whose key is taken maps to the
        earlier run and is neither inserted nor published. Runs without a key are published
        first and recorded right after: should that write fail, the broker still holds them and
        the worker records them when it runs them. An unmigrated database fails before any
        publish, with NotMigrated.
        """
        if not runs:
            return {}
        if all(r.idempotency_key is None for r in runs):
            self._check_schema()
            publish(list(runs))
            self._record_queued(runs)
            return {r.id: r.id for r in runs}
        with self._connect(transaction=True) as conn:
            inserted = {row.id for row in conn.execute(ENQUEUE, {"rows": _json_rows(runs)})}
            owners = {r.id: r.id if r.id in inserted else self._owner_of(conn, r) for r in runs}
            publish([r for r in runs if r.id in inserted])
        return owners

    def _record_queued(self, runs: Sequence[NewRun]) -> None:
        """Insert published runs as queued. They are in the broker by now, so a database that
        is down must not fail the submit (the caller would resubmit runs that will run): the
        worker records each run when it claims it. A dead pooled connection (the server
        restarted; SQLAlchemy has then invalidated the pool) gets one retry on a fresh one."""
        for attempt in (1, 2):
            try:
                with self._connect() as conn:
                    conn.execute(ENQUEUE, {"rows": _json_rows(runs)})
                return
            except (OperationalError, InterfaceError) as exc:
                if attempt == 1 and exc.connection_invalidated:
                    continue
                log.warning(
                    "%d run(s) published but not recorded as queued, e.g. %s: %s; their "
                    "worker records them",
                    len(runs),
                    runs[0].id,
                    str(exc).strip().splitlines()[0],
                )
                return

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

    def claim(self, run: NewRun, worker: str, *, redelivered: bool = False) -> Claim:
        """Mark a run started unless it already reached a final state (a redelivery).

        Counts deliveries of the current attempt: a claim of a run that is still `started`
        means the worker that claimed it before died. A `redelivered` message whose earlier
        delivery left no claim (an idempotent agent) counts as its second delivery.
        """
        params = {**run.model_dump(mode="json"), "worker": worker, "redelivered": redelivered}
        params["input"] = jsonb.dumps(run.input)
        try:
            with self._connect() as conn:
                if (claimed := conn.execute(CLAIM, params).first()) is not None:
                    return Claim(
                        run_id=run.id,
                        claimed=True,
                        status=RunStatus.STARTED,
                        deliveries=claimed.deliveries,
                    )
                row = conn.execute(
                    select(_runs.c.status, _runs.c.output).where(_runs.c.id == run.id)
                ).one()
                return Claim(run_id=run.id, claimed=False, status=row.status, output=row.output)
        except IntegrityError:
            return self._duplicate(run)

    def _duplicate(self, run: NewRun) -> Claim:
        """A run whose idempotency key another run holds must not run: name that run."""
        with self._connect() as conn:
            owner = self._owner_of(conn, run)
        return Claim(run_id=run.id, claimed=False, status=RunStatus.CANCELLED, duplicate_of=owner)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Write a batch of state changes in one statement that also notifies waiting clients.

        A cancelled run stays cancelled whatever is reported after.
        """
        latest = {o.run.id: o for o in outcomes}
        rows = jsonb.dumps_rows([_outcome_row(o) for o in latest.values()], _JSON_FIELDS)
        with self._connect() as conn:
            conn.execute(RECORD, {"rows": rows}).all()

    def cancel(self, run_id: str) -> bool:
        """Cancel a run that has not started; True if it was cancelled here."""
        with self._connect(transaction=True) as conn:
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
                    {"c": NOTIFY_CHANNEL, "p": ended(run_id, RunStatus.CANCELLED)},
                )
        return done is not None

    def get(self, run_id: str) -> Run | None:
        with self._connect() as conn:
            row = conn.execute(select(_runs).where(_runs.c.id == run_id)).first()
        return Run.model_validate(row, from_attributes=True) if row else None

    def get_many(self, run_ids: Sequence[str]) -> dict[str, Run]:
        with self._connect() as conn:
            rows = conn.execute(select(_runs).where(_runs.c.id.in_(list(run_ids)))).all()
        return {r.id: Run.model_validate(r, from_attributes=True) for r in rows}

    def find(
        self,
        *,
        agent: str | None = None,
        status: RunStatus | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Runs newest first, filtered by agent, status (a RunStatus or its name) and enqueue
        time; an unknown status raises ValueError."""
        query = select(_runs).order_by(_runs.c.enqueued_at.desc().nulls_last()).limit(limit)
        if agent is not None:
            query = query.where(_runs.c.agent == agent)
        if status is not None:
            query = query.where(_runs.c.status == RunStatus(status).value)
        if since is not None:
            query = query.where(_runs.c.enqueued_at >= since)
        if until is not None:
            query = query.where(_runs.c.enqueued_at < until)
        with self._connect() as conn:
            return [Run.model_validate(r, from_attributes=True) for r in conn.execute(query)]

    def count_by_status(self, agent: str | None = None) -> dict[str, int]:
        query = select(_runs.c.status, func.count()).group_by(_runs.c.status)
        if agent is not None:
            query = query.where(_runs.c.agent == agent)
        with self._connect() as conn:
            return {row[0]: int(row[1]) for row in conn.execute(query)}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _json_rows(runs: Sequence[NewRun]) -> str:
    return jsonb.dumps_rows([r.model_dump(mode="json") for r in runs], _JSON_FIELDS)


def _outcome_row(o: Outcome) -> dict[str, Any]:
    return {
        **o.run.model_dump(mode="json"),
        "status": o.status.value,
        "output": o.output,
        "error_type": o.error_type,
        "error_message": o.error_message,
        "error_traceback": o.error_traceback,
        "worker": o.worker,
        "attempts": o.attempts,
        "started_at": _iso(o.started_at),
        "finished_at": _iso(o.finished_at),
    }
