"""Schema migrations: apply them, and check that a database is at head.

Checking needs no alembic (a fifth of a worker's start-up to import): the head this code
needs is HEAD, which a unit test pins to the head of `conveyor/migrations`, and a
database's revision is one row of alembic's own table. Applying them imports alembic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, Connection, Engine, inspect, make_url, text
from sqlalchemy.exc import OperationalError

if TYPE_CHECKING:
    from alembic.config import Config

from conveyor.errors import NotMigrated, ServiceUnavailable
from conveyor.models.db import engine_for

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
_LOCK_KEY = 0x636F6E76  # "conv": serialises concurrent upgrades
HEAD = "0008"
"""The revision this code needs: the head of conveyor/migrations (a unit test pins it)."""
VERSION_TABLE = "alembic_version"


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    return HEAD


def migrations_head() -> str | None:
    """The head of conveyor/migrations, as alembic reads it (what HEAD must be)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def revision_of(conn: Connection) -> str | None:
    """The revision a database is at (alembic's version table), or None for an empty one."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(url: str | Engine) -> str | None:
    """The revision the database is at, or None for an empty one."""
    engine = engine_for(url) if isinstance(url, str) else url
    try:
        with engine.connect() as conn:
            return revision_of(conn)
    except OperationalError as exc:
        raise ServiceUnavailable(f"database unreachable: {exc.orig}") from None


def upgrade(url: str) -> tuple[str | None, str]:
    """Migrate to head under an advisory lock; returns (before, after)."""
    from alembic import command

    try:
        with engine_for(url).begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            before = revision_of(conn)
            command.upgrade(_config(conn), "head")
    except OperationalError as exc:
        raise ServiceUnavailable(f"database unreachable: {exc.orig}") from None
    return before, head_revision()


def not_migrated(url: str | URL, current: str | None) -> NotMigrated:
    """The one-line error for a database not at head: which database, where it is, the fix."""
    where = make_url(url).render_as_string(hide_password=True)
    return NotMigrated(
        f"database {where} is at revision {current or 'none (empty)'}, this code needs "
        f"{head_revision()}: run `conveyor db upgrade`"
    )


def schema_error(url: str | Engine) -> NotMigrated | None:
    """NotMigrated (see `not_migrated`) unless the database is at head, else None."""
    current = current_revision(url)
    if current == head_revision():
        return None
    return not_migrated(url if isinstance(url, str) else url.url, current)


def check_migrated(url: str) -> None:
    """Raise NotMigrated, naming the database and the fix, unless it is at head."""
    if (error := schema_error(url)) is not None:
        raise error
