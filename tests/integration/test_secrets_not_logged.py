"""Passwords in service URLs never reach a log, stdout or stderr.

A private Redis that requires a password is the broker; PostgreSQL (trust auth here, so the
password is carried but never checked) has one in its URL too. A real worker, the `conveyor`
command (status, health, runs, submit, exporter; success and failure paths) and the Client
run with them, and their whole output is searched for the passwords. Each check also asserts
that the URL's masked form or the command's real output is there, so the output searched is
the one that would leak.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from conveyor import Client, RunStatus
from tests.integration.conftest import make_app, service_env
from tests.support.cli import conveyor
from tests.support.private_redis import private_redis
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, WorkerProcess

REDIS_PASSWORD = f"redispw{uuid.uuid4().hex[:12]}"
DB_PASSWORD = f"dbpw{uuid.uuid4().hex[:12]}"
SECRETS = (REDIS_PASSWORD, DB_PASSWORD)
TIMEOUT = 60


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets or SECRETS:
        assert secret not in text, f"a password leaked:\n{text[-3000:]}"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("redis-with-password")
    with private_redis(directory, "--requirepass", REDIS_PASSWORD) as port:
        broker = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
        database = make_url(database_url).set(password=DB_PASSWORD)
        yield service_env(
            broker, database.render_as_string(hide_password=False), f"p{uuid.uuid4().hex[:8]}."
        )


def test_a_worker_and_the_client_never_log_a_password(
    env: dict[str, str],
    log_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with caplog.at_level(logging.DEBUG):
        app = make_app(env)
        worker = WorkerProcess(app, env, "default", log_dir)
        try:
            worker.wait_ready()
            with Client(app) as client:
                run = client.wait(client.submit("tests.add", {"a": 1, "b": 2}), timeout=TIMEOUT)
                assert run.status is RunStatus.SUCCEEDED
                leaky = f"cannot reach redis://:{REDIS_PASSWORD}@cache.internal:6379"
                failed = client.wait(client.submit("tests.boom", {"message": leaky}), TIMEOUT)
                assert failed.status is RunStatus.FAILED
        finally:
            worker.stop()
    log = worker.log.read_text(errors="replace")
    assert "redis://:**@127.0.0.1" in log
    assert "cannot reach redis://:**@cache.internal:6379" in log
    assert_no_secret(log)
    assert_no_secret(caplog.text)
    out, err = capfd.readouterr()
    assert_no_secret(out + err)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("status",), "default"),
        (("-v", "health", "broker"), "healthy"),
        (("-v", "health", "database"), "healthy"),
        (("-v", "runs", "--limit", "1"), "run(s)"),
        (("-v", "submit", "conveyor.ping", '{"x": 1}'), "-"),
    ],
)
def test_cli_commands_never_print_a_password(
    env: dict[str, str], args: tuple[str, ...], expected: str
) -> None:
    done = conveyor(env, *args)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout + done.stderr
    assert_no_secret(done.stdout + done.stderr)


@pytest.mark.parametrize(
    ("setting", "url", "args"),
    [
        ("CONVEYOR_BROKER_URL", "redis://:{secret}@127.0.0.1:{port}/0", ("-v", "health", "broker")),
        ("CONVEYOR_BROKER_URL", "amqp://guest:{secret}@127.0.0.1:5672//", ("-v", "status")),
        ("CONVEYOR_BROKER_URL", "amqp://guest:{secret}@127.0.0.1:5672//", ("health", "broker")),
        ("CONVEYOR_DATABASE_URL", "postgresql://conveyor:{secret}@127.0.0.1:1/x", ("-v", "runs")),
    ],
)
def test_failures_never_print_a_password(
    env: dict[str, str], setting: str, url: str, args: tuple[str, ...]
) -> None:
    """A wrong password, or an unreachable server: one line of error, without the password."""
    wrong = f"wrong{uuid.uuid4().hex[:12]}"
    port = make_url(env["CONVEYOR_BROKER_URL"]).port
    done = conveyor(env | {setting: url.format(secret=wrong, port=port)}, *args)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "unreachable" in output or "unhealthy" in output, output
    assert "Traceback" not in output
    assert_no_secret(output, wrong, *SECRETS)


def test_the_exporter_never_logs_a_password(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "exporter.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "-v", "exporter", "--port", "0"],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: b"/metrics" in out.read_bytes(), TIMEOUT, "the exporter to start")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=TIMEOUT)
    text = out.read_text(errors="replace")
    assert "conveyor exporter on http://127.0.0.1:" in text
    assert_no_secret(text)
