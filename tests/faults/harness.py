"""The fault-injection harness: isolated deployments, real workers, a workload and its ledger.

A FaultEnv is one deployment with its own queue prefix and database. Tests start real
`conveyor worker` processes on it, submit a workload of tests.faults.agents, inject a fault,
and end with `assert_ledger`: every run reached exactly one final state and every effect
happened once. Every wait here is bounded in time and stops by itself.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import psutil
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from conveyor import Client, ConveyorApp
from conveyor.models.db import engine_for
from conveyor.models.migrate import upgrade
from conveyor.runs.status import FINAL_STATUSES
from tests.faults import agents
from tests.integration.conftest import make_app
from tests.support.workers import WorkerProcess

AGENT_MODULES = "tests.faults.agents"
POLL = 0.05
FINAL = {s.value for s in FINAL_STATUSES}
WORKER_ONLY = {"CONVEYOR_VISIBILITY_TIMEOUT"}
"""Settings only the workers get. A client holds no messages, so the visibility timeout is
not its concern, and this process's agent registry may hold plugins' agents whose long time
limits a short timeout would fail; the workers load only the fault agents."""


@dataclass
class FaultEnv:
    """One isolated deployment: its own queue prefix and database, and the workers it ran."""

    broker_url: str
    database_url: str
    prefix: str
    env: dict[str, str]
    app: ConveyorApp
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def engine(self) -> Engine:
        assert self.app.settings.database_url is not None
        return engine_for(self.app.settings.database_url)

    def worker_logs(self, tail: int = 3000) -> str:
        """The end of every worker's log, for failure messages."""
        return "\n".join(
            f"--- {w.node}\n{w.log.read_text(errors='replace')[-tail:]}" for w in self.workers
        )

    def close(self, grace: float = 1.0) -> None:
        """Stop every worker: a short warm shutdown, the test being over, then SIGKILL."""
        for worker in self.workers:
            worker.stop(timeout=grace)
        self.workers.clear()


def setting_env(settings: dict[str, str]) -> dict[str, str]:
    """`visibility_timeout="5"` -> `CONVEYOR_VISIBILITY_TIMEOUT=5`."""
    return {
        k if k.startswith("CONVEYOR_") else f"CONVEYOR_{k.upper()}": str(v)
        for k, v in settings.items()
    }


def client_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in WORKER_ONLY}


def make_fault_env(broker_url: str, database_url: str, log_dir: Path, **settings: str) -> FaultEnv:
    """A new deployment: a new queue prefix, migrations applied, ledger tables created.
    Extra keyword arguments are CONVEYOR_* settings (`time_limit="3"`)."""
    prefix = f"f{uuid.uuid4().hex[:8]}."
    env = {
        "CONVEYOR_BROKER_URL": broker_url,
        "CONVEYOR_DATABASE_URL": database_url,
        "CONVEYOR_QUEUE_PREFIX": prefix,
        "CONVEYOR_AGENT_MODULES": AGENT_MODULES,
        "CONVEYOR_LOAD_PLUGINS": "false",
        **setting_env(settings),
    }
    if not broker_url.startswith("redis"):
        env.setdefault("CONVEYOR_RESULT_BACKEND", "rpc://")
    app = make_app(client_env(env))
    assert app.settings.database_url is not None
    upgrade(app.settings.database_url)
    agents.create_tables(engine_for(app.settings.database_url))
    return FaultEnv(broker_url, database_url, prefix, env, app, log_dir)


def start_worker(
    fenv: FaultEnv, pool: str = "default", *, concurrency: int = 2, kind: str = "prefork"
) -> WorkerProcess:
    """A real `conveyor worker` of `pool`, returned once it answers a ping."""
    worker = WorkerProcess(fenv.app, fenv.env, pool, fenv.log_dir, concurrency, kind)
    fenv.workers.append(worker)
    return worker.wait_ready(timeout=90)


def submit_workload(
    fenv: FaultEnv,
    n: int,
    *,
    agent: str = agents.LEDGER,
    seconds: float = 0.0,
    after: float = 0.0,
    hold: Path | None = None,
    hold_before: Path | None = None,
    keyed: bool = False,
) -> list[str]:
    """Submit n runs tagged 0..n-1; `keyed` gives each its own idempotency key, and `hold`
    (`hold_before`) makes each ledger run wait after (before) its effect until that file
    exists (see `release`)."""
    held = {"hold": str(hold)} if hold is not None else {}
    if hold_before is not None:
        held["hold_before"] = str(hold_before)
    payloads = [{"tag": i, "seconds": seconds, "after": after, **held} for i in range(n)]
    keys = [f"{fenv.prefix}{agent}-{i}" for i in range(n)] if keyed else None
    with Client(fenv.app) as client:
        return client.submit_many(agent, payloads, idempotency_keys=keys)


def submit_with_key(
    env: dict[str, str], agent: str, key: str, barrier: Barrier, results: Queue[str]
) -> None:
    """One producer process of a concurrent duplicate submit: its own app, then, once every
    producer is ready, one submit with idempotency key `key`; the run id goes to `results`."""
    with Client(make_app(client_env(env))) as client:
        barrier.wait(60)
        results.put(client.submit(agent, {"tag": 0}, idempotency_key=key))


def _query(fenv: FaultEnv, sql: str, run_ids: Sequence[str]) -> list[tuple[str, int]]:
    """Rows of (run id, number) for `sql` with :ids bound; [] while the database is down."""
    try:
        with fenv.engine.connect() as conn:
            return [(r[0], int(r[1])) for r in conn.execute(text(sql), {"ids": list(run_ids)})]
    except DBAPIError:
        return []


def statuses(fenv: FaultEnv, run_ids: Sequence[str]) -> dict[str, str]:
    """Each run's status in agent_runs ("missing" for none, or while the database is down)."""
    try:
        found = {r.id: r.status.value for r in fenv.app.runs.get_many(run_ids).values()}
    except DBAPIError:
        found = {}
    return {i: found.get(i, "missing") for i in run_ids}


def wait_final(fenv: FaultEnv, run_ids: Sequence[str], timeout: float) -> dict[str, str]:
    """Run id -> status once every run is final, or as they stand after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        now = statuses(fenv, run_ids)
        if all(s in FINAL for s in now.values()) or time.monotonic() > deadline:
            return now
        time.sleep(POLL)


def started(fenv: FaultEnv, run_ids: Sequence[str]) -> dict[str, int]:
    """Run id -> pid of the process that last started executing it."""
    rows = _query(
        fenv,
        "SELECT run_id, pid FROM fault_executions WHERE run_id = ANY(:ids) ORDER BY id",
        run_ids,
    )
    return dict(rows)


def wait_started(
    fenv: FaultEnv, run_ids: Sequence[str], timeout: float = 60, count: int | None = None
) -> dict[str, int]:
    """Run id -> pid, once `count` of the runs (all by default) have started executing: the
    agents mark it themselves, so a test can act "mid-task" without sleeping."""
    want = len(set(run_ids)) if count is None else count
    deadline = time.monotonic() + timeout
    while len(pids := started(fenv, run_ids)) < want:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"only {len(pids)} of {want} runs started after {timeout}s\n" + fenv.worker_logs()
            )
        time.sleep(POLL)
    return pids


def executions(fenv: FaultEnv, run_ids: Sequence[str]) -> dict[str, int]:
    """Run id -> how many times its agent body started."""
    rows = _query(
        fenv,
        "SELECT run_id, count(*) FROM fault_executions WHERE run_id = ANY(:ids) GROUP BY run_id",
        run_ids,
    )
    return {i: dict(rows).get(i, 0) for i in run_ids}


def wait_effects(fenv: FaultEnv, run_ids: Sequence[str], timeout: float = 60) -> None:
    """Return once every run's ledger effect is committed."""
    deadline = time.monotonic() + timeout
    while len(_effects(fenv, run_ids)) < len(set(run_ids)):
        if time.monotonic() > deadline:
            raise AssertionError(f"effects not all committed after {timeout}s")
        time.sleep(POLL)


def release(hold: Path) -> None:
    """Let the runs waiting on `hold` go on (tests.faults.agents.ledger's `hold`)."""
    hold.touch()


def wait_logged(fenv: FaultEnv, patterns: Iterable[str], timeout: float = 60) -> None:
    """Return once the workers' logs have a line matching each of the regular expressions
    `patterns`: for what a worker does but does not record, such as retrying a write while
    the database is down."""
    wanted = [re.compile(p, re.MULTILINE) for p in patterns]

    def missing() -> list[str]:
        logs = "".join(w.log.read_text(errors="replace") for w in fenv.workers)
        return [p.pattern for p in wanted if not p.search(logs)]

    deadline = time.monotonic() + timeout
    while not_yet := missing():
        if time.monotonic() > deadline:
            raise AssertionError(f"not logged after {timeout}s: {not_yet}\n" + fenv.worker_logs())
        time.sleep(POLL)


def _effects(fenv: FaultEnv, run_ids: Sequence[str]) -> dict[str, int]:
    """Run id -> effect rows: ledger rows, or the idempotent agent's upserted row."""
    rows = _query(
        fenv,
        "SELECT run_id, count(*) FROM fault_ledger WHERE run_id = ANY(:ids) GROUP BY run_id "
        "UNION ALL SELECT run_id, 1 FROM fault_kv WHERE run_id = ANY(:ids)",
        run_ids,
    )
    return dict(rows)


@dataclass
class LedgerReport:
    """What the ledger showed: final states, executions and effects per run."""

    statuses: dict[str, str]
    executions: dict[str, int]
    effects: dict[str, int]

    @property
    def reexecuted(self) -> list[str]:
        return [i for i, n in self.executions.items() if n > 1]


def assert_ledger(
    fenv: FaultEnv, run_ids: Sequence[str], expect: str | dict[str, str] = "succeeded"
) -> LedgerReport:
    """Every run reached exactly one final state (`expect`, or per run), nothing was lost,
    and every succeeded run's effect happened exactly once (at most once for the others)."""
    ids = list(dict.fromkeys(run_ids))
    assert len(ids) == len(run_ids), "the workload has duplicate run ids"
    wanted = expect if isinstance(expect, dict) else dict.fromkeys(ids, expect)
    report = LedgerReport(statuses(fenv, ids), executions(fenv, ids), {})
    effects = _effects(fenv, ids)
    report.effects = {i: effects.get(i, 0) for i in ids}
    lost = {i: s for i, s in report.statuses.items() if s not in FINAL}
    wrong = {i: s for i, s in report.statuses.items() if s in FINAL and s != wanted[i]}
    repeated = {i: n for i, n in report.effects.items() if n > 1}
    missing = [i for i in ids if wanted[i] == "succeeded" and report.effects[i] == 0]
    problems = {"lost": lost, "wrong state": wrong, "repeated": repeated, "no effect": missing}
    assert not any(problems.values()), f"ledger: {problems}\n{fenv.worker_logs()}"
    return report


def children(worker: WorkerProcess) -> list[int]:
    """The pids of a worker's pool processes."""
    return [p.pid for p in psutil.Process(worker.proc.pid).children()]


def kill(pids: Iterable[int], sig: signal.Signals = signal.SIGKILL) -> None:
    for pid in pids:
        os.kill(pid, sig)
