"""The real services of this machine, or the embedded ones where a server is missing."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def admin_url(embedded_dir: Path) -> str:
    """The PostgreSQL to create test databases in: local server, else an embedded one."""
    if reachable("127.0.0.1", 5432):
        return PG_ADMIN
    from conveyor.embedded import Embedded

    return Embedded(embedded_dir).ensure().postgres_url.replace("+psycopg", "")


def redis_base(embedded_dir: Path) -> str:
    """A Redis URL without a db index: local server, else the embedded one."""
    if reachable("127.0.0.1", 6379):
        return REDIS
    from conveyor.embedded import Embedded

    return Embedded(embedded_dir).ensure().redis_url


@contextmanager
def scratch_database(admin: str, prefix: str = "conveyor_test") -> Iterator[str]:
    """A database of its own for one test run, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
