"""Supervisor: one worker process per pool in the foreground, stopped together and cleanly."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from conveyor.celery_app import ConveyorApp
from conveyor.errors import ServiceUnavailable

log = logging.getLogger(__name__)


def worker_command(
    pool: str, node_name: str, loglevel: str, concurrency: int | None = None
) -> list[str]:
    """The command line of one `conveyor worker` process."""
    argv = [sys.executable, "-m", "conveyor", "worker", "--pool", pool, "--name", node_name]
    argv += ["--loglevel", loglevel]
    return argv + (["--concurrency", str(concurrency)] if concurrency else [])


def worker_env(app: ConveyorApp) -> dict[str, str]:
    """The environment of a worker process: this one, with the app's resolved services."""
    s = app.settings
    return {
        **os.environ,
        "CONVEYOR_BROKER_URL": str(s.broker_url),
        "CONVEYOR_DATABASE_URL": str(s.database_url),
        "CONVEYOR_RESULT_BACKEND": str(s.result_backend),
        "CONVEYOR_DATA_DIR": str(s.data_dir),
    }


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], grace: float) -> None:
    """Warm shutdown (SIGTERM) of every process, then SIGKILL of any group left after `grace`."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop in %.0fs; killing it", proc.pid, grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


@dataclass
class Supervisor:
    """Starts `conveyor worker --pool NAME` for each pool and stops them all on exit."""

    app: ConveyorApp
    pools: Iterable[str]
    node_suffix: str = ""
    loglevel: str = "WARNING"
    grace: float = 30.0
    log_dir: str | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def node_name(self, pool: str) -> str:
        return f"{pool}{self.node_suffix}@%h"

    def start(self) -> None:
        env = worker_env(self.app)
        for pool in self.pools:
            out = None
            if self.log_dir is not None:
                os.makedirs(self.log_dir, exist_ok=True)
                out = open(os.path.join(self.log_dir, f"worker-{pool}.log"), "ab")  # noqa: SIM115
            self.procs[pool] = subprocess.Popen(
                worker_command(pool, self.node_name(pool), self.loglevel),
                env=env,
                start_new_session=True,
                stdout=out,
                stderr=out,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once every worker answers a ping; raise if one exits or time runs out."""
        deadline = time.monotonic() + timeout
        expected = {p: self.node_name(p).split("@")[0] for p in self.procs}
        while True:
            dead = self.exited()
            if dead:
                raise ServiceUnavailable(f"worker for pool {dead[0]} exited during start-up")
            replies = self.app.control.ping(timeout=0.5) or []
            names = {name.split("@")[0] for reply in replies for name in reply}
            if set(expected.values()) <= names:
                return
            if time.monotonic() > deadline:
                missing = [p for p, n in expected.items() if n not in names]
                raise ServiceUnavailable(f"workers not ready after {timeout:g}s: {missing}")

    def exited(self) -> list[str]:
        return [pool for pool, proc in self.procs.items() if proc.poll() is not None]

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL for any process group left after the grace."""
        stop_processes(self.procs.values(), self.grace)
        self.procs.clear()
