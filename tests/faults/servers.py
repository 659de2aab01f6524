"""Private Redis, PostgreSQL and RabbitMQ servers that fault tests may stop, kill and restart,
and a loopback blackhole.

Each server runs on its own free port with its own data directory, so a test can take it down
without touching the machine's shared services. `start()` returns once the server answers
(bounded by READY_TIMEOUT); `stop()` is a clean shutdown, `kill()` a SIGKILL, and both return
once the process is gone. `timings` keeps how long each start and stop took.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import redis
from psycopg import sql

from conveyor.models.migrate import upgrade
from tests.support.private_redis import free_port
from tests.support.services import reachable
from tests.support.waiting import wait_until

READY_TIMEOUT = 90.0
COMMAND_TIMEOUT = 60.0
PG_DATABASE = "conveyor_faults"
RABBIT_BIN = "/usr/lib/rabbitmq/bin"
"""RabbitMQ's own scripts: the /usr/sbin wrappers switch to the rabbitmq user, whose
environment and cookie are not this node's."""


class MissingServer(RuntimeError):
    """A server binary (or tool) is not installed here; tests that need it skip, naming it."""


def find_binary(name: str, *extra_dirs: str) -> str:
    """The path of `name` on PATH or in `extra_dirs`; MissingServer when it is nowhere."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *extra_dirs]))
    if found is None:
        raise MissingServer(f"{name} is not installed (looked on PATH and in {extra_dirs})")
    return found


def _alive(pid: int) -> bool:
    """True until `pid` is gone and reaped: PostgreSQL refuses to start while its old
    postmaster's pid still exists, even as a zombie."""
    return psutil.pid_exists(pid)


def _listener(port: int) -> int | None:
    """The pid of the process listening on 127.0.0.1:`port`, if any."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, timeout=COMMAND_TIMEOUT, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{output}")


class Server(ABC):
    """One private server on its own port: start, stop, kill -9, restart."""

    name = "server"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.timings: dict[str, list[float]] = {}

    @property
    @abstractmethod
    def url(self) -> str: ...

    @abstractmethod
    def ready(self) -> bool:
        """True once the server answers its clients."""

    @abstractmethod
    def _launch(self) -> None: ...

    @abstractmethod
    def _shutdown(self) -> None:
        """Ask the server to stop cleanly, returning once it says it has."""

    def pid(self) -> int | None:
        return _listener(self.port)

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        began = time.monotonic()
        self._launch()
        wait_until(self.ready, timeout, f"{self.name} to answer on port {self.port}")
        self._timed("start", began)

    def stop(self) -> None:
        began, pid = time.monotonic(), self.pid()
        self._shutdown()
        self._await_exit(pid)
        self._timed("stop", began)

    def kill(self) -> None:
        """SIGKILL the server's main process, returning once it is gone."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._await_exit(pid)

    def restart(self, down_for: float = 0.0, *, hard: bool = False) -> None:
        """Stop (or kill, if `hard`), stay down `down_for` seconds (the fault), start again."""
        if hard:
            self.kill()
        else:
            self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def close(self) -> None:
        """Kill the server if it runs and remove its files."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def _await_exit(self, pid: int | None) -> None:
        if pid is not None:
            wait_until(lambda: not _alive(pid), COMMAND_TIMEOUT, f"{self.name} ({pid}) to exit")
        wait_until(
            lambda: not reachable("127.0.0.1", self.port),
            COMMAND_TIMEOUT,
            f"{self.name} port to close",
        )

    def _timed(self, what: str, began: float) -> None:
        self.timings.setdefault(what, []).append(round(time.monotonic() - began, 3))


class RedisServer(Server):
    """redis-server with AOF on and fsync at every write, so a restart keeps every message."""

    name = "redis"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.binary = find_binary("redis-server")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ready(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _launch(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.root)]
        argv += ["--logfile", str(self.root / "redis.log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def _shutdown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(COMMAND_TIMEOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(COMMAND_TIMEOUT)
        self._await_exit(None)


class PostgresServer(Server):
    """A cluster of its own (initdb + pg_ctl, as the postgres user when run as root), with a
    migrated database PG_DATABASE."""

    name = "postgresql"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        self.initdb = find_binary("initdb", *dirs)
        self.pg_ctl = find_binary("pg_ctl", *dirs)
        self.as_user: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise MissingServer("running as root, but there is no postgres user") from exc
            self.as_user = [find_binary("runuser"), "-u", "postgres", "--"]
        # The cluster lives outside `root`: pytest's temporary directories are private to
        # their owner, and the postgres user must reach its data directory.
        self.home = Path(tempfile.mkdtemp(prefix="conveyor-faults-pg-"))
        if owner is not None:
            os.chown(self.home, owner.pw_uid, owner.pw_gid)
        self.data = self.home / "data"
        self._as_owner(
            self.initdb,
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self._created = False

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{PG_DATABASE}"

    def ready(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        super().start(timeout)
        if not self._created:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PG_DATABASE)))
            upgrade(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
            self._created = True

    def pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def _launch(self) -> None:
        options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off"
        log, wait = str(self.home / "log"), str(int(READY_TIMEOUT))
        try:
            self._as_owner(
                self.pg_ctl,
                "-D",
                str(self.data),
                "-l",
                log,
                "-o",
                options,
                "-w",
                "-t",
                wait,
                "start",
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{Path(log).read_text()[-2000:]}") from None

    def _shutdown(self) -> None:
        self._as_owner(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        """`pg_ctl stop -w` returns once the server is down and its pid file gone; the exited
        postmaster may linger as a zombie until init reaps it, which a new one ignores."""
        began = time.monotonic()
        self._shutdown()
        self._timed("stop", began)

    def kill(self) -> None:
        """SIGKILL the postmaster, returning once its backends noticed and exited too (a new
        postmaster refuses to start while they hold the old shared memory)."""
        pid = self.pid()
        backends = psutil.Process(pid).children() if pid is not None else []
        super().kill()
        wait_until(
            lambda: not any(_alive(b.pid) for b in backends),
            COMMAND_TIMEOUT,
            "postgresql backends to exit",
        )

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.home, ignore_errors=True)

    def _as_owner(self, *argv: str) -> None:
        _run([*self.as_user, *argv])


class RabbitServer(Server):
    """A second RabbitMQ node, `faults-<port>@localhost`, with no plugins and its own
    ports, database, logs and Erlang cookie."""

    name = "rabbitmq"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.server = find_binary("rabbitmq-server", RABBIT_BIN)
        self.ctl = find_binary("rabbitmqctl", RABBIT_BIN)
        if Path(RABBIT_BIN).is_dir():
            self.server = f"{RABBIT_BIN}/rabbitmq-server"
            self.ctl = f"{RABBIT_BIN}/rabbitmqctl"
        self.node = f"faults-{self.port}@localhost"
        (root / "enabled_plugins").write_text("")
        (root / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        self.env = {
            **os.environ,
            "HOME": str(root),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def ready(self) -> bool:
        return reachable("127.0.0.1", self.port)

    def _launch(self) -> None:
        subprocess.run([self.server, "-detached"], env=self.env, check=True, timeout=30)

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        super().start(timeout)
        self._ctl("await_startup", "--timeout", str(int(timeout)))

    def _shutdown(self) -> None:
        self._ctl("shutdown")

    def _ctl(self, *args: str) -> None:
        _run([self.ctl, "-n", self.node, "-q", *args], env=self.env)


def iptables_works() -> str | None:
    """None if this machine can add loopback iptables rules, else why not."""
    try:
        iptables = find_binary("iptables")
    except MissingServer as exc:
        return str(exc)
    done = subprocess.run([iptables, "-w", "-S", "INPUT"], capture_output=True, check=False)
    return None if done.returncode == 0 else done.stderr.decode(errors="replace").strip()


@contextlib.contextmanager
def blackhole(port: int) -> Iterator[None]:
    """Drop every loopback packet to and from `port`, so connections hang instead of failing
    (as behind a dead network); the rules are always removed on exit."""
    iptables = find_binary("iptables")
    rules = [
        ["INPUT", "-i", "lo", "-p", "tcp", direction, str(port), "-j", "DROP"]
        for direction in ("--dport", "--sport")
    ]
    added: list[list[str]] = []
    try:
        for rule in rules:
            _run([iptables, "-w", "-I", *rule])
            added.append(rule)
        yield
    finally:
        for rule in added:
            _run([iptables, "-w", "-D", *rule])
