"""`conveyor flower` as a user runs it: basic auth, a finished run in the API, queue lengths."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Client, create_app, load_settings
from conveyor.app import resolve_services
from conveyor.embedded import Embedded
from conveyor.workers.supervisor import stop_processes
from tests.support.http import free_port, get, get_json
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, WorkerProcess

CREDENTIALS = "ops:flower-test-pass"


def flower_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONVEYOR_", "FLOWER_")) and k not in ("APP", "BROKER_URL")
    }
    return {**base, **env, **extra, "PYTHONPATH": str(ROOT)}


class FlowerProcess:
    """`conveyor flower` as a subprocess, awaited until its HTTP server answers."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.port = free_port()
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "flower", "--port", str(self.port), *args],
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def url(self, path: str, prefix: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{prefix}{path}"

    def answers(self, prefix: str = "") -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"flower exited with {self.proc.returncode}:\n{self.output()}")
        try:
            return get(self.url("healthcheck", prefix))[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> int | None:
        stop_processes([self.proc], grace=15)
        self._out.close()
        return self.proc.returncode


@pytest.fixture
def flower(redis_env: dict[str, str], log_dir: Path) -> Iterator[FlowerProcess]:
    env = flower_env(redis_env, CONVEYOR_FLOWER_BASIC_AUTH=f"someone:else-entirely,{CREDENTIALS}")
    process = FlowerProcess(env, log_dir / f"flower-{os.getpid()}-{free_port()}.log")
    try:
        wait_until(process.answers, 60, "Flower to answer")
        yield process
    finally:
        assert process.stop() == 0, process.output()


def test_flower_lists_a_finished_ping_and_conveyors_queues(
    flower: FlowerProcess,
    client: Client,
    redis_env: dict[str, str],
    redis_workers: dict[str, WorkerProcess],
) -> None:
    node = redis_workers["default"].node
    wait_until(  # a heartbeat from the worker: Flower's event receiver is subscribed
        lambda: (
            f'flower_worker_online{{worker="{node}"}} 1.0' in get(flower.url("metrics"))[1].decode()
        ),
        30,
        "Flower to receive a heartbeat of the default worker",
    )
    run_id = client.submit("conveyor.ping", {"flower": True})
    assert client.wait(run_id, timeout=30).status == "succeeded"

    assert get(flower.url("api/tasks"))[0] == 401
    assert get(flower.url("api/tasks"), "ops:wrong-password")[0] == 401
    assert get(flower.url("api/queues/length"))[0] == 401

    def listed() -> bool:
        tasks = get_json(flower.url("api/tasks?taskname=conveyor.ping"), CREDENTIALS)
        return tasks.get(run_id, {}).get("state") == "SUCCESS"

    wait_until(listed, 15, f"Flower to list run {run_id} as SUCCESS")

    prefix = redis_env["CONVEYOR_QUEUE_PREFIX"]
    queues = get_json(flower.url("api/queues/length"), CREDENTIALS)["active_queues"]
    lengths = {q["name"]: q["messages"] for q in queues}
    assert {f"{prefix}default", "celery"} <= set(lengths), lengths
    assert all(isinstance(n, int) and n >= 0 for n in lengths.values()), lengths


def run_flower(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "flower", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_flower_refuses_to_start_without_auth_outside_embedded_mode(
    redis_env: dict[str, str],
) -> None:
    done = run_flower(flower_env(redis_env), "--port", str(free_port()))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "CONVEYOR_FLOWER_BASIC_AUTH is not set" in done.stderr


def test_flower_refuses_a_weak_password_without_printing_it(redis_env: dict[str, str]) -> None:
    env = flower_env(redis_env, CONVEYOR_FLOWER_BASIC_AUTH="ops:Tr0ub4!")
    done = run_flower(env, "--port", str(free_port()))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "conveyor: invalid setting CONVEYOR_FLOWER_BASIC_AUTH: "
        "entry 1 of 1 has a password shorter than 8 characters"
    )
    assert "Tr0ub4!" not in done.stdout + done.stderr


def test_embedded_flower_needs_no_auth_on_loopback_and_counts_priority_lists(
    tmp_path: Path,
) -> None:
    """No URLs set: Flower's pages are open on 127.0.0.1 (its API stays closed, as Flower
    wants FLOWER_UNAUTHENTICATED_API for that), and with no worker the broker page lists
    every pool queue, counting messages of every priority (conveyor's sep and steps)."""
    data_dir = tmp_path / "c"
    env = flower_env({"CONVEYOR_DATA_DIR": str(data_dir)})
    refused = run_flower(env, "--address", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 1
    assert "without basic auth Flower listens only on loopback" in refused.stderr
    flower = FlowerProcess(env, tmp_path / "flower.log", "--url-prefix", "/ops/flower/")
    try:
        wait_until(lambda: flower.answers("ops/flower/"), 60, "embedded Flower to answer")
        settings = load_settings(
            data_dir=data_dir, broker_url=None, database_url=None, queue_prefix=""
        )
        with Client(create_app(resolve_services(settings))) as client:
            for priority in (0, 9, 9):
                client.submit("conveyor.ping", {"priority": priority}, priority=priority)
        assert get(flower.url("api/queues/length", "ops/flower/"))[0] == 401
        status, page = get(flower.url("broker", "ops/flower/"))
        assert status == 200
        rows = re.findall(r"<td>([^<]+)</td>\s*<td[^>]*>(\d+)</td>", page.decode())
        lengths = {name: int(count) for name, count in rows}
        assert lengths == {
            "default": 3,
            "memory": 0,
            "vector": 0,
            "analytics": 0,
            "io": 0,
            "celery": 0,
        }
    finally:
        code = flower.stop()
        Embedded(data_dir).stop()
    assert code == 0, flower.output()
