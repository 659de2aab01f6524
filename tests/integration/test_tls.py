"""TLS to Redis for real: a private redis-server that speaks only TLS, with a CA made here.

With CONVEYOR_TLS_CA naming that CA, the broker, the result backend, the cache and a worker
all connect with CERT_REQUIRED and a run succeeds; with another CA every one of them refuses
the server, and only CONVEYOR_TLS_INSECURE=true makes them connect anyway.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kombu.exceptions import OperationalError

from conveyor import Client, ConveyorApp, RunStatus
from conveyor.services import cache_client
from tests.integration.conftest import make_app, service_env
from tests.support.certs import issue
from tests.support.private_redis import private_redis
from tests.support.workers import WorkerProcess

TIMEOUT = 60


@dataclass(frozen=True)
class TlsRedis:
    url: str
    ca: Path
    other_ca: Path


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    directory = tmp_path_factory.mktemp("tls-redis")
    ca = issue(directory / "ca", "conveyor-test-ca", ca=True)
    other = issue(directory / "other", "someone-elses-ca", ca=True)
    server = issue(directory / "server", "localhost", issuer=ca)
    options = ["--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key)]
    options += ["--tls-ca-cert-file", str(ca.cert), "--tls-auth-clients", "no"]
    with private_redis(directory / "data", *options, tls=True) as port:
        yield TlsRedis(f"rediss://127.0.0.1:{port}/0", ca.cert, other.cert)


def app_for(
    tls_redis: TlsRedis, database_url: str, **tls: str
) -> tuple[ConveyorApp, dict[str, str]]:
    env = service_env(tls_redis.url, database_url, f"tls{uuid.uuid4().hex[:6]}.")
    env |= {f"CONVEYOR_TLS_{k.upper()}": v for k, v in tls.items()}
    return make_app(env), env


def connects(app: ConveyorApp) -> None:
    """Broker, result backend and cache each complete a TLS handshake and a command."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
    app.backend.client.ping()
    client = cache_client(app.settings.cache_url, app.settings.tls)
    assert client is not None
    client.ping()


def test_a_worker_runs_over_verified_tls(
    tls_redis: TlsRedis, database_url: str, log_dir: Path
) -> None:
    app, env = app_for(tls_redis, database_url, ca=str(tls_redis.ca))
    assert app.conf.broker_use_ssl["ssl_ca_certs"] == str(tls_redis.ca)
    connects(app)
    worker = WorkerProcess(app, env, "default", log_dir)
    try:
        worker.wait_ready()
        with Client(app) as client:
            run = client.wait(client.submit("tests.add", {"a": 40, "b": 2}), timeout=TIMEOUT)
        assert (run.status, run.output) == (RunStatus.SUCCEEDED, 42)
    finally:
        worker.stop()


def test_a_server_signed_by_another_ca_is_refused(tls_redis: TlsRedis, database_url: str) -> None:
    app, _ = app_for(tls_redis, database_url, ca=str(tls_redis.other_ca))
    with (
        pytest.raises(OperationalError, match="certificate verify failed"),
        app.connection_for_write() as conn,
    ):
        conn.ensure_connection(max_retries=1)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        app.backend.client.ping()
    client = cache_client(app.settings.cache_url, app.settings.tls)
    assert client is not None
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client.ping()


def test_the_system_trust_store_does_not_trust_a_private_ca(
    tls_redis: TlsRedis, database_url: str
) -> None:
    app, _ = app_for(tls_redis, database_url)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        app.backend.client.ping()


def test_insecure_connects_without_verifying(tls_redis: TlsRedis, database_url: str) -> None:
    app, _ = app_for(tls_redis, database_url, ca=str(tls_redis.other_ca), insecure="true")
    connects(app)
