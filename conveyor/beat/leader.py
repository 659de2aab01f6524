"""The single-leader lock of `conveyor beat`: a PostgreSQL session-level advisory lock.

Every beat process keeps one dedicated connection. The process whose
`pg_try_advisory_lock(key)` succeeds leads; the others retry every
`CONVEYOR_BEAT_LOCK_RETRY_SECONDS` (1 s). PostgreSQL releases the lock when the leader's
session ends, so the takeover time is:

- leader process killed (kill -9, OOM) or stopped: its socket closes, its backend ends at
  once, and a standby leads within one retry interval plus a round trip (≤ 1 s by default;
  0.16-0.67 s measured in the two-beat test);
- leader host or network lost: PostgreSQL notices through the TCP keepalives this connection
  asks for (idle 5 s, then 3 probes 2 s apart: about 11 s), then a standby leads within one
  retry interval. The old leader, cut off from PostgreSQL, cannot pass its fence.

Fence: every tick, and again right before each dispatch, the leader runs one statement that
writes its `beat_leader` row only if `pg_locks` shows that this very session still holds the
lock. No row back, or a broken connection, and it sends nothing and becomes a standby.

Rows of `beat_leader`: `<prefix>beat` is the leader (holder `hostname:pid`, renewed every
tick); `<prefix>beat/<entry>` records when each schedule entry was last sent, so a new
leader continues the old one's cadence instead of restarting it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Sequence

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from conveyor.config import Settings

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
SERVER_KEEPALIVE = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"

_HELD = """EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
      AND classid::bigint = :hi AND objid::bigint = :lo AND objsubid = 1)"""
_MARK = text(
    "INSERT INTO beat_leader (name, holder, renewed_at) "
    f"SELECT :name, :holder, now() WHERE {_HELD} "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, renewed_at = excluded.renewed_at "
    "RETURNING 1"
)
_TRY = text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")
_AGES = text(
    "SELECT name, extract(epoch FROM now() - renewed_at)::float8 FROM beat_leader "
    "WHERE name = ANY(:names)"
)


def leader_name(settings: Settings) -> str:
    """The lock's name: one leader per queue prefix (deployments sharing a database)."""
    return f"{settings.queue_prefix}beat"


def entry_row(leader: str, entry: str) -> str:
    """The `beat_leader` row recording when a schedule entry was last sent."""
    return f"{leader}/{entry}"


def lock_key(name: str) -> int:
    """The advisory lock key of `name`: a stable signed 64-bit hash."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaderLock:
    """One process's claim on the leader lock, over its own long-lived connection."""

    def __init__(
        self,
        database_url: str,
        name: str,
        holder: str | None = None,
        *,
        connect_timeout: int = CONNECT_TIMEOUT,
    ) -> None:
        self.name, self.key = name, lock_key(name)
        self.holder = holder or default_holder()
        unsigned = self.key & 0xFFFF_FFFF_FFFF_FFFF
        self._held = {"hi": unsigned >> 32, "lo": unsigned & 0xFFFF_FFFF}
        self._engine = create_engine(
            database_url,
            poolclass=NullPool,
            connect_args={
                "connect_timeout": connect_timeout,
                "application_name": f"conveyor-beat {self.holder}"[:63],
                "options": SERVER_KEEPALIVE,
                **KEEPALIVE,
            },
        )
        self._conn: Connection | None = None
        self.leading = False
        self._unreachable = False

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            conn = self._engine.connect()
            self._conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def acquire(self) -> bool:
        """Try once to take the lock; True if this process leads (now or already)."""
        if self.leading:
            return True
        try:
            got = self._connection().execute(_TRY, {"key": self.key}).scalar()
        except SQLAlchemyError as exc:
            level = logging.DEBUG if self._unreachable else logging.WARNING
            log.log(level, "beat: cannot reach PostgreSQL for the leader lock: %s", _first(exc))
            self._unreachable = True
            self._drop()
            return False
        self._unreachable = False
        self.leading = bool(got)
        return self.leading

    def mark(self, row: str | None = None) -> bool:
        """The fence: write `row` (the leader row by default) with now(), only if this
        session still holds the lock. False means this process must not dispatch."""
        if not self.leading:
            return False
        params = {"name": row or self.name, "holder": self.holder, **self._held}
        try:
            marked = self._connection().execute(_MARK, params).first() is not None
        except SQLAlchemyError as exc:
            log.warning("beat: lost the leader connection: %s", _first(exc))
            marked = False
        if not marked:
            log.warning("beat: %s no longer holds the leader lock; standing by", self.holder)
            self._drop()
        return marked

    def ages(self, rows: Sequence[str]) -> dict[str, float] | None:
        """Seconds since each of these rows was written (by the database's clock); None if
        the database cannot be read, which also gives up the lock."""
        try:
            found = self._connection().execute(_AGES, {"names": list(rows)}).all()
        except SQLAlchemyError as exc:
            log.warning("beat: cannot read the schedule state: %s", _first(exc))
            self._drop()
            return None
        return {str(name): float(age) for name, age in found}

    def release(self) -> None:
        """Give the lock up (a standby leads within its retry interval) and disconnect."""
        if self.leading and self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.execute(_UNLOCK, {"key": self.key})
        self._drop()
        self._engine.dispose()

    def _drop(self) -> None:
        """Forget the connection; closing it ends the session, and with it any lock."""
        self.leading = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                conn.close()


def _first(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
