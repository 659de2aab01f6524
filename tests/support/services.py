"""The real services of this machine, or the embedded ones where a server is missing."""

from __future__ import annotations

import functools
import json
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379"
RABBITMQ_API = "http://127.0.0.1:15672/api"


def session_slot() -> int:
    """This pytest-xdist worker's number (gw0 is 0), 0 without xdist."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def redis_test_db() -> int:
    """Redis db 3, or CONVEYOR_TEST_REDIS_DB, plus the xdist slot. Sessions that run side by
    side need their own db: plain Celery's catch-all `celery` queue and kombu's `unacked`
    hash are shared by every queue prefix in a db."""
    return int(os.environ.get("CONVEYOR_TEST_REDIS_DB", "3")) + session_slot()


@functools.cache
def local_amqp_url() -> str:
    """The local RabbitMQ, on a vhost of this session and xdist worker (numbered as
    redis_test_db), made afresh once per test process (through the management API): plain
    Celery's catch-all `celery` queue is shared by every queue prefix in a vhost, and a queue
    left by an earlier run (or version) must not decide what this one declares."""
    return fresh_amqp_vhost(f"conveyor-test-{redis_test_db()}")


def fresh_amqp_vhost(vhost: str) -> str:
    """An empty vhost `vhost` that guest may use, and its URL."""
    _rabbitmq_api("DELETE", f"/vhosts/{vhost}", None)
    _rabbitmq_api("PUT", f"/vhosts/{vhost}", {})
    _rabbitmq_api(
        "PUT", f"/permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"}
    )
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


def _rabbitmq_api(method: str, path: str, body: dict[str, str] | None) -> None:
    """A management API call; deleting what does not exist is not an error."""
    request = urllib.request.Request(
        RABBITMQ_API + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="},
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except urllib.error.HTTPError as exc:
        if not (method == "DELETE" and exc.code == 404):
            raise


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
