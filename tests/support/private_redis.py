"""A throwaway redis-server on a free port, for tests that need a password or TLS."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def private_redis(directory: Path, *options: str, tls: bool = False) -> Iterator[int]:
    """Run redis-server with `options` on a free port (its TLS port if `tls`), yield the port,
    and stop it. Skips, naming the reason, when redis-server is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ports = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
    log = directory / "redis.log"
    argv = [binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(directory), "--logfile", str(log), *options]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: _listening(port) or proc.poll() is not None, 30, f"redis-server on {port}"
        )
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {log.read_text(errors='replace')[-2000:]}")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
