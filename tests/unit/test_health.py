"""`conveyor health`: arguments, node names, outcomes and output, without any service.

The HTTP probes are checked against a tiny server of the test's own on loopback; the worker,
broker and database probes against real services are in tests/integration/test_health.py.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conveyor.cli import cli
from conveyor.cli.health import Unhealthy, node_name, ping_worker
from conveyor.embedded import Embedded
from tests.unit.support import FAKE_BROKER, FAKE_DATABASE

# The package's `health` attribute is the click group, so take the module itself.
health_module = sys.modules["conveyor.cli.health"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["health", *args])


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVEYOR_BROKER_URL", FAKE_BROKER)
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", FAKE_DATABASE)
    monkeypatch.setenv("CONVEYOR_DATA_DIR", str(tmp_path / "data"))


def test_the_default_node_is_pool_at_this_host_as_conveyor_worker_names_it() -> None:
    host = socket.gethostname()
    assert node_name("vector", None) == f"vector@{host}"
    assert node_name("vector", "vector.x@%h") == f"vector.x@{host}"
    assert node_name("vector", "memory.1@test") == "memory.1@test"
    assert node_name("vector", "solo") == "celery@solo"  # no @: a host name, as in Celery


@pytest.mark.parametrize(
    "args",
    [
        ("worker", "--timeout", "0"),
        ("worker", "--timeout", "soon"),
        ("broker", "--timeout", "-1"),
        ("database", "--timeout", "301"),
        ("exporter", "--url", "127.0.0.1:9810/healthz"),
        ("flower", "--url", "ftp://127.0.0.1/healthcheck"),
        ("worker", "--pool"),
        ("nothing",),
    ],
)
def test_bad_arguments_exit_2_before_any_probe(args: tuple[str, ...]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "healthy" not in result.output


def test_an_unknown_pool_is_one_unhealthy_line(configured: None, no_network: None) -> None:
    result = invoke("worker", "--pool", "gpu")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"worker gpu@{socket.gethostname()}: unhealthy: unknown pool 'gpu'")


def test_an_invalid_setting_is_unhealthy_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("CONVEYOR_BROKER_URL", "http://nope")
    result = invoke("broker", "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["healthy"] is False
    assert "CONVEYOR_BROKER_URL" in data["detail"]
    assert "Traceback" not in result.output


def test_unconfigured_a_probe_never_starts_the_embedded_services(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_network: None
) -> None:
    monkeypatch.setenv("CONVEYOR_DATA_DIR", str(tmp_path / "data"))

    def refuse(self: Embedded) -> Any:
        raise AssertionError("a health probe started the embedded services")

    monkeypatch.setattr(Embedded, "ensure", refuse)
    for check in ("worker", "broker", "database"):
        result = invoke(check)
        assert result.exit_code == 1, result.output
        assert "a probe never starts them" in result.output
    assert not (tmp_path / "data").exists()


class FakeControl:
    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = replies
        self.calls: list[tuple[list[str], float]] = []

    def ping(self, destination: list[str], timeout: float) -> list[dict[str, Any]]:
        self.calls.append((destination, timeout))
        return self.replies


class FakeApp:
    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.control = FakeControl(replies)


@pytest.fixture
def broker_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_module, "check_broker", lambda app, timeout: None)


def test_a_pong_from_the_node_is_healthy(broker_ok: None) -> None:
    app = FakeApp([{"default@h": {"ok": "pong"}}])
    assert ping_worker(app, "default@h", 2.0).startswith("pong in ")  # type: ignore[arg-type]
    (destination, timeout), *_ = app.control.calls
    assert destination == ["default@h"] and 0 < timeout <= 2.0


@pytest.mark.parametrize(
    ("replies", "message"),
    [
        ([], "no reply to a ping within 2s"),
        ([{"other@h": {"ok": "pong"}}], "no reply to a ping within 2s"),
        ([{"default@h": {"error": "busy"}}], "unexpected reply"),
    ],
)
def test_no_pong_from_the_node_is_unhealthy(
    broker_ok: None, replies: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(Unhealthy, match=message):
        ping_worker(FakeApp(replies), "default@h", 2.0)  # type: ignore[arg-type]


def test_an_unreachable_broker_fails_the_worker_probe_before_the_ping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def down(app: Any, timeout: float) -> None:
        raise Unhealthy("broker unreachable: refused")

    monkeypatch.setattr(health_module, "check_broker", down)
    app = FakeApp([{"default@h": {"ok": "pong"}}])
    with pytest.raises(Unhealthy, match="broker unreachable"):
        ping_worker(app, "default@h", 2.0)  # type: ignore[arg-type]
    assert app.control.calls == []


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, tuple[int, bytes]]]]:
    """A loopback HTTP server of this test answering each path as the dict says."""
    answers: dict[str, tuple[int, bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers.get(self.path, (404, b"no"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", answers
    finally:
        server.shutdown()
        server.server_close()


def test_exporter_200_is_healthy_and_503_is_not(
    http_server: tuple[str, dict[str, tuple[int, bytes]]],
) -> None:
    base, answers = http_server
    answers["/healthz"] = (200, b'{"broker": "ok", "last_event_seconds_ago": 1.5}')
    result = invoke("exporter", "--url", f"{base}/healthz")
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"exporter {base}/healthz: healthy: HTTP 200: broker ok, last_event_seconds_ago 1.5\n"
    )
    answers["/healthz"] = (503, b'{"broker": "unreachable: refused"}')
    result = invoke("exporter", "--url", f"{base}/healthz", "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["check"] == "exporter" and data["healthy"] is False
    assert data["detail"] == "HTTP 503: broker unreachable: refused"
    assert set(data) == {"check", "target", "healthy", "detail", "seconds"}


def test_flower_healthcheck_text_body(
    http_server: tuple[str, dict[str, tuple[int, bytes]]],
) -> None:
    base, answers = http_server
    answers["/healthcheck"] = (200, b"OK")
    result = invoke("flower", "--url", f"{base}/healthcheck")
    assert result.exit_code == 0
    assert result.output.strip().endswith("healthy: HTTP 200: OK")


def test_nothing_listening_is_unhealthy_in_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        result = invoke("exporter", "--url", f"http://127.0.0.1:{port}/healthz", "--timeout", "2")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "unhealthy: no answer" in result.output
