"""RunRepository: every read and write of agent_runs, parameterised (Core or runs.statements)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from functools import partial
from typing import Any, cast

from psycopg.errors import UndefinedColumn, UndefinedTable
from sqlalchemy import Connection, Engine, Table, func, select, text, update
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from conveyor.models import jsonb
from conveyor.models.migrate import schema_error
from conveyor.runs.notify import NOTIFY_CHANNEL, ended
from conveyor.runs.queued import QueuedBatch
from conveyor.runs.records import Claim, ClaimRequest, NewRun, Outcome, Run
from conveyor.runs.statements import CLAIM, CLAIM_MANY, ENQUEUE, ENQUEUE_BATCH, RECORD
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
        self._kept = threading.local()

    def keep_connection(self) -> None:
        """The calling thread (a writer thread) keeps one autocommit connection for all its
        writes, a new one after a failure, instead of checking one out per write."""
        self._kept.wanted = True

    @contextmanager
    def _connect(self, *, transaction: bool = False) -> Iterator[Connection]:
        """A connection (autocommit, or one transaction) whose schema errors read as such."""
        try:
            with self._connection(transaction) as conn:
                yield conn
        except ProgrammingError as exc:
            if not isinstance(exc.orig, UndefinedTable | UndefinedColumn):
                raise
            if (error := schema_error(self.engine)) is None:
                raise
            raise error from None

    def _connection(self, transaction: bool) -> AbstractContextManager[Connection]:
        if transaction:
            return self.engine.begin()
        if not getattr(self._kept, "wanted", False):
            return self._autocommit.connect()
        return self._kept_connection()

    @contextmanager
    def _kept_connection(self) -> Iterator[Connection]:
        conn = getattr(self._kept, "conn", None)
        if conn is None or conn.closed:
            conn = self._kept.conn = self._autocommit.connect()
        try:
            yield conn
        except (OperationalError, InterfaceError):
            self._kept.conn = None
            conn.invalidate()
            raise

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
        the worker records them when it runs them (the failure is logged; the submit goes on).
        An unmigrated database fails before any publish, with NotMigrated.
        """
        if not runs:
            return {}
        if all(r.idempotency_key is None for r in runs):
            self._check_schema()
            publish(list(runs))
            self._record_queued(ENQUEUE, lambda: {"rows": _json_rows(runs)}, [r.id for r in runs])
            return {r.id: r.id for r in runs}
        with self._connect(transaction=True) as conn:
            inserted = {row.id for row in conn.execute(ENQUEUE, {"rows": _json_rows(runs)})}
            owners = {r.id: r.id if r.id in inserted else self._owner_of(conn, r) for r in runs}
            publish([r for r in runs if r.id in inserted])
        return owners

    def enqueue_batch(
        self,
        batch: QueuedBatch,
        publish: Callable[[list[int]], None],
        record: Callable[[Callable[[], None]], Any] | None = None,
    ) -> list[str]:
        """`enqueue` for runs of one agent (Client.submit_many), with the same guarantee, in
        one statement: `publish` gets the positions of the runs to publish, in order; returns
        the run that owns each run's effect, in order. A batch without keys is recorded right
        after its publish, here, or by the call `record` is handed then (on another thread,
        so that the caller publishes its next batch meanwhile; it awaits that call)."""
        if not batch.ids:
            return []
        if not batch.keyed:
            self._check_schema()
            publish(list(range(len(batch))))
            write = partial(self._record_queued, ENQUEUE_BATCH, batch.params, batch.ids)
            write() if record is None else record(write)
            return list(batch.ids)
        with self._connect(transaction=True) as conn:
            inserted = {row.id for row in conn.execute(ENQUEUE_BATCH, batch.params())}
            taken = [k for i, k in zip(batch.ids, batch.keys, strict=True) if i not in inserted]
            holders = self._key_holders(conn, batch.agent, [k for k in taken if k is not None])
            owners = [
                i if i in inserted or k is None else holders.get(k, i)
                for i, k in zip(batch.ids, batch.keys, strict=True)
            ]
            publish([n for n, i in enumerate(batch.ids) if i in inserted])
        return owners

    def _record_queued(
        self, statement: Any, params: Callable[[], dict[str, Any]], ids: Sequence[str]
    ) -> None:
        """Insert published runs as queued. They are in the broker by now, so no error here
        may fail the submit (the caller would resubmit runs that will run), a database's or
        any other: it is logged, and the worker records each run when it claims it. A dead
        pooled connection (the server restarted; SQLAlchemy has then invalidated the pool)
        gets one retry on a fresh one."""
        for attempt in (1, 2):
            try:
                with self._connect() as conn:
                    conn.execute(statement, params())
                return
            except Exception as exc:
                if attempt == 1 and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                    continue
                log.warning(
                    "%d run(s) published but not recorded as queued, e.g. %s: %s; their "
                    "worker records them",
                    len(ids),
                    ids[0],
                    str(exc).strip().splitlines()[0],
                )
                return

    @staticmethod
    def _key_holders(conn: Connection, agent: str, keys: list[str]) -> dict[str, str]:
        """The run holding each of these idempotency keys of `agent`."""
        if not keys:
            return {}
        query = select(_runs.c.idempotency_key, _runs.c.id).where(
            _runs.c.agent == agent, _runs.c.idempotency_key.in_(set(keys))
        )
        return {row.idempotency_key: row.id for row in conn.execute(query)}

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

    def claim_many(self, claims: Sequence[ClaimRequest]) -> list[Claim]:
        """`claim` for many runs in one statement (the asyncio pool's group commit), each
        Claim in the order asked. A batch that trips an idempotency key falls back to one
        claim per run, so only the run that reused the key is told so."""
        if len({c.run.id for c in claims}) < len(claims):
            return [self.claim(c.run, c.worker, redelivered=c.redelivered) for c in claims]
        rows = jsonb.dumps_rows(
            [{**c.run.model_dump(mode="json"), "worker": c.worker, "redelivered": c.redelivered}
             for c in claims],
            ("input",),
        )  # fmt: skip
        try:
            with self._connect() as conn:
                claimed = {r.id: r.deliveries for r in conn.execute(CLAIM_MANY, {"rows": rows})}
                others = [c.run.id for c in claims if c.run.id not in claimed]
                final = {}
                if others:
                    query = select(_runs.c.id, _runs.c.status, _runs.c.output)
                    final = {r.id: r for r in conn.execute(query.where(_runs.c.id.in_(others)))}
        except IntegrityError:
            return [self.claim(c.run, c.worker, redelivered=c.redelivered) for c in claims]
        return [
            Claim(run_id=c.run.id, claimed=True, status=RunStatus.STARTED,
                  deliveries=claimed[c.run.id])
            if c.run.id in claimed
            else Claim(run_id=c.run.id, claimed=False, status=final[c.run.id].status,
                       output=final[c.run.id].output)
            for c in claims
        ]  # fmt: skip

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
