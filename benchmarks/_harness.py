"""Shared benchmark plumbing: scratch databases, Redis dbs, worker subprocesses, reporting."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import redis

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_HOST = os.environ.get("BENCH_PG", "postgres@127.0.0.1:5432")
REDIS_HOST = os.environ.get("BENCH_REDIS", "127.0.0.1:6379")


def dumped_json(module: str, function: str, *args: Any, timeout: float = 900) -> Any:
    """Call `module.function(out, *args)` in a fresh interpreter, which writes JSON to the
    file `out`, and return it: what it imports (every module of a corpus) stays out of the
    process being measured."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "dump.json")
        call = ", ".join(repr(a) for a in (out, *args))
        subprocess.run(
            [PYTHON, "-c", f"from {module} import {function}; {function}({call})"],
            cwd=REPO, timeout=timeout, check=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return json.loads(Path(out).read_text())


def pg_url(db: str, driver: str = "postgresql") -> str:
    """`driver` is e.g. postgresql, postgresql+psycopg or db+postgresql+psycopg."""
    return f"{driver}://{PG_HOST}/{db}"


def redis_url(index: int) -> str:
    return f"redis://{REDIS_HOST}/{index}"


def unique(tag: str) -> str:
    """A short unique name, usable as database name and queue prefix."""
    return f"bench_{tag}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


@contextlib.contextmanager
def scratch_database(tag: str) -> Iterator[str]:
    """CREATE DATABASE bench_<tag>_..., yield its name, DROP it (WITH FORCE) at the end."""
    name = unique(tag)
    admin = pg_url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_redis(*indexes: int) -> Iterator[list[str]]:
    """Flush only the given Redis dbs before and after; yield their URLs."""
    urls = [redis_url(i) for i in indexes]
    for url in urls:
        redis.Redis.from_url(url).flushdb()
    try:
        yield urls
    finally:
        for url in urls:
            with contextlib.suppress(redis.RedisError):
                redis.Redis.from_url(url).flushdb()


def flush_redis(url: str) -> None:
    redis.Redis.from_url(url).flushdb()


class Worker:
    """One worker subprocess in its own session (process group), logging to a file."""

    def __init__(self, label: str, argv: Sequence[str], env: dict[str, str], log_dir: Path):
        self.label, self.argv = label, list(argv)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.log_path = log_dir / f"{label}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Worker:
        out = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"worker {self.label} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL the whole process group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                print(
                    f"[bench] worker {self.label} ignored SIGTERM for {grace:g}s; killing",
                    file=sys.stderr,
                )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


class Workers(contextlib.AbstractContextManager["Workers"]):
    """Starts workers and guarantees they are stopped, on success, error or signal."""

    def __init__(self, keep_logs: bool = False) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
        self.keep_logs = keep_logs
        self.running: list[Worker] = []
        signal.signal(signal.SIGTERM, _raise_exit)

    def start(self, label: str, argv: Sequence[str], env: dict[str, str]) -> Worker:
        worker = Worker(label, argv, env, self.log_dir).start()
        self.running.append(worker)
        return worker

    def stop(self, worker: Worker) -> None:
        worker.stop()
        if worker in self.running:
            self.running.remove(worker)

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        for worker in reversed(self.running):
            worker.stop()
        self.running.clear()
        if self.keep_logs or exc_type is not None:
            print(f"[bench] worker logs kept in {self.log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)


def _raise_exit(signum: int, _: Any) -> None:
    raise SystemExit(128 + signum)


# --- worker command lines -------------------------------------------------------------------


BENCH_AGENTS = "benchmarks.agents"
"""The benchmark-only agent module (bench.ping, a default agent), loaded by every conveyor
worker and client the benchmarks start, through CONVEYOR_AGENT_MODULES."""


def conveyor_env(
    broker: str, database: str, prefix: str, pool: str, concurrency: int
) -> dict[str, str]:
    return {
        "CONVEYOR_BROKER_URL": broker,
        "CONVEYOR_DATABASE_URL": database,
        "CONVEYOR_QUEUE_PREFIX": prefix,
        "CONVEYOR_POOLS": json.dumps({"default": {"kind": pool, "concurrency": concurrency}}),
        "CONVEYOR_AGENT_MODULES": BENCH_AGENTS,
    }


def conveyor_worker_argv(concurrency: int, loglevel: str) -> list[str]:
    return [
        PYTHON,
        "-m",
        "conveyor",
        "worker",
        "--pool",
        "default",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
    ]


DELIVERY_SETTINGS = (
    "task_acks_late",
    "task_reject_on_worker_lost",
    "worker_prefetch_multiplier",
    "task_serializer",
    "result_serializer",
    "accept_content",
    "broker_transport_options",
)


def conveyor_delivery(broker: str) -> dict[str, Any]:
    """conveyor's delivery settings for `broker`, read from the app conveyor builds (so they
    follow conveyor): late acks, reject on worker lost, prefetch 1, JSON, and its broker
    transport options (visibility timeout, priority steps 0..9, body encoding, redelivery
    sweep, socket timeouts). Raw Celery gets them through RAW_CONFIG."""
    from conveyor.app import create_app

    settings = conveyor_settings(broker, pg_url("postgres", "postgresql+psycopg"), "", "prefork", 2)
    conf = create_app(settings).conf
    return {key: conf[key] for key in DELIVERY_SETTINGS}


def raw_config(args: argparse.Namespace, broker: str) -> dict[str, Any]:
    """The raw side's delivery settings: conveyor's, unless --raw-celery-defaults."""
    return {} if getattr(args, "raw_celery_defaults", False) else conveyor_delivery(broker)


def raw_terms(args: argparse.Namespace) -> str:
    """How raw Celery was configured, for verdict lines."""
    if getattr(args, "raw_celery_defaults", False):
        return "raw Celery defaults (early acks, prefetch 4)"
    return "raw Celery with conveyor's delivery settings"


def raw_env(
    broker: str,
    backend: str,
    reliable: bool = False,
    config: dict[str, Any] | None = None,
    queue: str = "",
) -> dict[str, str]:
    return {
        "RAW_BROKER_URL": broker,
        "RAW_RESULT_BACKEND": backend,
        "RAW_RELIABLE": "1" if reliable else "",
        "RAW_CONFIG": json.dumps(config or {}),
        "RAW_QUEUE": queue,
    }


def raw_worker_argv(pool: str, concurrency: int, loglevel: str, name: str) -> list[str]:
    return [
        PYTHON,
        "-m",
        "celery",
        "-A",
        "benchmarks.raw_app",
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--hostname",
        f"{name}@%h",
        "--without-mingle",
        "--without-gossip",
    ]


def conveyor_settings(broker: str, database: str, prefix: str, pool: str, concurrency: int) -> Any:
    from conveyor.config import load_settings

    return load_settings(
        broker_url=broker,
        database_url=database,
        queue_prefix=prefix,
        pools={"default": {"kind": pool, "concurrency": concurrency}},
        agent_modules=[BENCH_AGENTS],
    )


# --- arguments and reporting ----------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser, raw_celery: bool = True) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--loglevel",
        default="WARNING",
        help="worker log level, same for both sides (default WARNING)",
    )
    if raw_celery:
        parser.add_argument(
            "--raw-celery-defaults",
            action="store_true",
            help="give raw Celery Celery's defaults (early acks, prefetch multiplier 4, "
            "kombu's transport options) instead of conveyor's delivery settings (acks_late, "
            "reject_on_worker_lost, prefetch 1, conveyor's broker transport options; the "
            "default since issue 17)",
        )
        parser.add_argument(
            "--raw-reliable",
            action="store_true",
            help="no effect: conveyor's delivery settings are now the default",
        )
    parser.add_argument("--keep-logs", action="store_true", help="keep worker log files")


def run_main(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> int:
    """Parse the arguments, run the benchmark, print its table or (--json) its JSON."""
    args = parser.parse_args(argv)
    result = run(args)
    dump_json(result) if args.json else report(result)
    return 0


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {
        "n": len(ordered),
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "mean": statistics.fmean(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(str(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)


def machine_info() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


def dump_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
