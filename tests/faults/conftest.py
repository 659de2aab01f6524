"""Fault fixtures: a scratch database per test, the test Redis db, a deployment factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultEnv, make_fault_env
from tests.support.services import (
    PG_ADMIN,
    REDIS,
    local_amqp_url,
    reachable,
    redis_test_db,
    scratch_database,
)

MakeEnv = Callable[..., FaultEnv]


@pytest.fixture(scope="session")
def fault_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-logs")


@pytest.fixture(scope="session")
def fault_redis() -> str:
    """The local Redis, on the session's test db (tests.support.services.redis_test_db)."""
    if not reachable("127.0.0.1", 6379):
        pytest.skip("the fault tests need Redis on 127.0.0.1:6379")
    return f"{REDIS}/{redis_test_db()}"


@pytest.fixture(scope="session")
def fault_amqp() -> str:
    if not reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    return local_amqp_url()


@pytest.fixture
def fault_db() -> Iterator[str]:
    """A scratch database on the local PostgreSQL, dropped after the test."""
    if not reachable("127.0.0.1", 5432):
        pytest.skip("the fault tests need PostgreSQL on 127.0.0.1:5432")
    with scratch_database(PG_ADMIN, prefix="conveyor_fault") as url:
        yield url


@pytest.fixture
def make_env(fault_db: str, fault_logs: Path) -> Iterator[MakeEnv]:
    """make_env(broker_url, **settings): a deployment on this test's database, its workers
    stopped at the end."""
    made: list[FaultEnv] = []

    def make(broker_url: str, **settings: str) -> FaultEnv:
        made.append(make_fault_env(broker_url, fault_db, fault_logs, **settings))
        return made[-1]

    yield make
    for fenv in made:
        fenv.close()


@pytest.fixture
def redis_env(make_env: MakeEnv, fault_redis: str) -> FaultEnv:
    return make_env(fault_redis)
