"""Schema migrations: apply them, and check that a database is at head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from conveyor.errors import NotMigrated, ServiceUnavailable
from conveyor.models.db import engine_for

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x636F6E76  # "conv": serialises concurrent upgrades


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None for an empty one."""
    try:
        with engine_for(url).connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise ServiceUnavailable(f"database unreachable: {exc.orig}") from None


def upgrade(url: str) -> tuple[str | None, str]:
    """Migrate to head under an advisory lock; returns (before, after)."""
    try:
        with engine_for(url).begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            before = MigrationContext.configure(conn).get_current_revision()
            command.upgrade(_config(conn), "head")
    except OperationalError as exc:
        raise ServiceUnavailable(f"database unreachable: {exc.orig}") from None
    return before, head_revision()


def check_migrated(url: str) -> None:
    """Raise NotMigrated, naming the fix, unless the database is at head."""
    current, head = current_revision(url), head_revision()
    if current != head:
        raise NotMigrated(
            f"database is at revision {current or 'none (empty)'}, this code needs {head}: "
            "run `conveyor db upgrade`"
        )
