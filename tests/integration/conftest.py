"""Integration fixtures: a database per run, a queue prefix per run, real worker processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Client, ConveyorApp, create_app, load_settings
from conveyor.models.migrate import upgrade
from tests.support.services import (
    admin_url,
    local_amqp_url,
    reachable,
    redis_base,
    redis_test_db,
    scratch_database,
)
from tests.support.workers import WorkerProcess

AGENT_MODULES = "tests.support.agents"


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded")


@pytest.fixture(scope="session")
def pg_admin(embedded_dir: Path) -> str:
    return admin_url(embedded_dir)


@pytest.fixture(scope="session")
def database_url(pg_admin: str) -> Iterator[str]:
    with scratch_database(pg_admin) as url:
        upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))
        yield url


@pytest.fixture(scope="session")
def redis_url(embedded_dir: Path) -> str:
    base = redis_base(embedded_dir)
    return base if base.startswith("redis+socket") else f"{base}/{redis_test_db()}"


@pytest.fixture(scope="session", autouse=True)
def _test_redis_env(redis_url: str) -> None:
    os.environ["TEST_REDIS_URL"] = redis_url.replace("redis+socket://", "unix://")


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-logs")


def service_env(broker: str, database: str, prefix: str) -> dict[str, str]:
    return {
        "CONVEYOR_BROKER_URL": broker,
        "CONVEYOR_DATABASE_URL": database,
        "CONVEYOR_QUEUE_PREFIX": prefix,
        "CONVEYOR_AGENT_MODULES": AGENT_MODULES,
    }


def make_app(env: dict[str, str]) -> ConveyorApp:
    return create_app(
        load_settings(**{k.removeprefix("CONVEYOR_").lower(): v for k, v in env.items()})
    )


@pytest.fixture(scope="session")
def redis_env(redis_url: str, database_url: str) -> dict[str, str]:
    return service_env(redis_url, database_url, f"t{uuid.uuid4().hex[:8]}.")


@pytest.fixture(scope="session")
def redis_app(redis_env: dict[str, str]) -> ConveyorApp:
    return make_app(redis_env)


@pytest.fixture(scope="session")
def redis_workers(
    redis_app: ConveyorApp, redis_env: dict[str, str], log_dir: Path
) -> Iterator[dict[str, WorkerProcess]]:
    """A default and a memory worker on the Redis broker, shared by the session."""
    workers = {
        pool: WorkerProcess(redis_app, redis_env, pool, log_dir) for pool in ("default", "memory")
    }
    try:
        for w in workers.values():
            w.wait_ready()
        yield workers
    finally:
        for w in workers.values():
            w.stop()


@pytest.fixture
def client(redis_app: ConveyorApp, redis_workers: dict[str, WorkerProcess]) -> Iterator[Client]:
    with Client(redis_app) as c:
        yield c


@pytest.fixture(scope="session")
def amqp_url() -> str:
    if not reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672 and has no embedded fallback")
    return local_amqp_url()
