"""A real Prometheus server scrapes the exporter on loopback and sees the known backlog."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Client, ConveyorApp
from conveyor.metrics import Exporter, serve
from tests.integration.conftest import make_app, service_env
from tests.support.waiting import wait_until

PRIORITIES = {0: 5, 9: 4}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def app(redis_url: str, database_url: str) -> Iterator[ConveyorApp]:
    app = make_app(service_env(redis_url, database_url, f"p{uuid.uuid4().hex[:8]}."))
    yield app
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            if queue.name != "celery":
                queue(conn.default_channel).delete()


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("the Debian prometheus package is not installed (./dev test installs it)")
    return found


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_the_backlog_of_priorities_0_and_9(
    app: ConveyorApp, prometheus_binary: str, tmp_path: Path
) -> None:
    with Client(app) as client:
        for priority, count in PRIORITIES.items():
            for i in range(count):
                client.submit("tests.add", {"a": i, "b": priority}, priority=priority)
    queue = f"{app.settings.queue_prefix}default"
    with serve(Exporter(app, events=False), "127.0.0.1", 0) as server:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: conveyor\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{server.server_port}']\n"
        )
        port = _free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        prometheus = subprocess.Popen(
            [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path}/db",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:

            def scraped() -> bool:
                try:
                    return bool(_query(base, f'conveyor_queue_ready{{queue="{queue}"}}'))
                except OSError:
                    return False

            wait_until(scraped, 60, "Prometheus to scrape the exporter")
            ready = _query(base, f'conveyor_queue_ready{{queue="{queue}"}}')
            assert float(ready[0]["value"][1]) == sum(PRIORITIES.values())
            assert ready[0]["metric"]["pool"] == "default"
            up = _query(base, 'up{job="conveyor"}')
            assert float(up[0]["value"][1]) == 1.0
            desired = _query(base, 'conveyor_pool_desired_replicas{pool="default"}')
            assert float(desired[0]["value"][1]) == 5  # ceil(9 / (2 slots x 1))
        finally:
            prometheus.terminate()
            prometheus.wait(30)
            log.close()
