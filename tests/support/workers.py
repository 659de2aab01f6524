"""Real `conveyor worker` processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from conveyor.app import ConveyorApp
from conveyor.workers.supervisor import stop_processes, worker_command

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """One worker of one pool, started as a subprocess and awaited until it answers a ping."""

    def __init__(
        self,
        app: ConveyorApp,
        env: dict[str, str],
        pool: str,
        log_dir: Path,
        concurrency: int | None = None,
        kind: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.app = app
        self.pool = pool
        self.node = f"{pool}.{uuid.uuid4().hex[:6]}@test"
        self.log = log_dir / f"worker-{self.node}.log"
        args = worker_command(pool, self.node, "INFO", concurrency)
        path = str(ROOT) if cwd is None else f"{cwd}{os.pathsep}{ROOT}"
        full_env = {**os.environ, **env, "PYTHONPATH": path}
        if kind:
            full_env["CONVEYOR_POOLS"] = f'{{"{pool}": {{"kind": "{kind}"}}}}'
        self._out = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            env=full_env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd or ROOT,
        )

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            replies = self.app.control.ping(destination=[self.node], timeout=0.5) or []
            if any(self.node in reply for reply in replies):
                return self
        raise TimeoutError(f"worker {self.node} not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self, timeout: float = 30.0) -> int | None:
        """Warm shutdown, then SIGKILL of the process group after `timeout`."""
        stop_processes([self.proc], grace=timeout)
        self._out.close()
        return self.proc.returncode

    def kill(self) -> int | None:
        """kill -9 of the worker's process group: a node lost without a word."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()
        return self.proc.returncode
