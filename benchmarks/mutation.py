r"""Mutation testing of the modules that carry conveyor's promises (issue 17), with mutmut 3.

Not a CI step: a measure, reported in benchmarks/README.md ("## mutation.py").

    .venv/bin/pip install mutmut==3.8.1
    nice -n 19 .venv/bin/python benchmarks/mutation.py --group runs --redis-db 12 --amqp-slot 9 \
        --json runs.json
    nice -n 19 .venv/bin/python benchmarks/mutation.py --group data --redis-db 13 --amqp-slot 8 \
        --json data.json
    # after new tests: only the survivors, then both runs counted together
    nice -n 19 .venv/bin/python benchmarks/mutation.py --group runs --redis-db 12 --amqp-slot 9 \
        --survivors --survivors-from runs.json
    .venv/bin/python benchmarks/mutation.py --group runs --report --before runs.json

What it does, in a copy of this checkout (WORKDIR, default /tmp/conveyor-mutation-GROUP; the
checkout itself is never written):
1. copies the checkout there (without .git, .venv, mutants) and appends a [tool.mutmut]
   section to the copy's pyproject.toml: the modules of the group, and their tests;
2. runs `mutmut run` once to generate the mutants and collect mutmut's stats (which test
   reaches which function, in the pytest process);
3. rewrites those stats so that each mutated function is run against the module's chosen
   tests only, plus the module's worker tests: mutmut sees only calls made in the pytest
   process, and the recorder, the claim and the repository's writes run in real worker
   subprocesses. Those workers import conveyor from the mutants/ tree (tests/support/workers.py
   puts the test tree's root on their PYTHONPATH) and inherit MUTANT_UNDER_TEST, so they run
   the mutant too;
4. runs `mutmut run` on the group's mutants and prints, per module: mutants, killed, survived,
   timeout, no tests, killed share; and the surviving mutants' names (`mutmut show NAME` in
   WORKDIR prints a diff).

A mutant counts as killed when one of its tests fails (a test that hangs fails on pytest's
--timeout). mutmut mutates function bodies only: the SQL texts of conveyor/runs/statements.py
are module constants, so it makes no mutant of them. Modules whose mutants all reach workers
are measured on a fixed random sample of them (Module.sample, SEED). mutmut forgets its
results when the test selection changes (new test files), hence --survivors-from and --before
with the --json of the earlier run.

In the copy, two things differ from a plain test run: the tests' scratch databases are
dropped at the end of the run instead of at each teardown (defer_drops), and OpenMP gets one
thread (mutmut forks every mutant from a process that has used faiss).

Tests use real services. Pick a Redis db and a RabbitMQ vhost no one else uses at the same
time: the tests' db is CONVEYOR_TEST_REDIS_DB plus the pytest-xdist slot and their vhost is
conveyor-test-<slot>, so the script sets PYTEST_XDIST_WORKER=gw<amqp-slot> and
CONVEYOR_TEST_REDIS_DB=<redis-db> - <amqp-slot>. It keeps a sentinel key in that db and reports
whether anything flushed it during the run (a flush fails tests, which would count as kills).
Worker processes left behind by a mutant that mutmut killed on its wall-clock limit (they run
in their own session) are stopped by pid at the end: every process whose cwd is in WORKDIR.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT_VERSION = "3.8.1"
redis_errors: tuple[type[BaseException], ...] = (OSError,)


@dataclass(frozen=True)
class Module:
    name: str
    path: str
    functions: tuple[str, ...]
    """fnmatch patterns of the mangled function names to mutate (mutmut's x_<function> and
    xǁ<Class>ǁ<method>); ("*",) is every function of the file."""
    tests: tuple[str, ...]
    """Test files (or node ids) whose in-process calls count."""
    worker_tests: tuple[str, ...] = field(default=())
    """Test files (or node ids) added to every function: they reach it in worker processes."""
    sample: int | None = None
    """Run this many of the module's mutants, drawn at random with a fixed seed (SEED), when
    all of them would take too long (each one that reaches a worker starts real workers)."""

    @property
    def dotted(self) -> str:
        return self.path.removesuffix(".py").replace("/", ".")

    def owns(self, mangled: str) -> bool:
        module, _, function = mangled.rpartition(".")
        patterns = self.functions
        return module == self.dotted and any(fnmatch.fnmatchcase(function, p) for p in patterns)


RUNS_REDIS = "tests/integration/test_runs_redis.py"
RUN_GUARDS = "tests/integration/test_run_guards.py"
MODULES: dict[str, list[Module]] = {
    "runs": [
        Module(
            "run recording",
            "conveyor/runs/recorder.py",
            ("*",),
            ("tests/unit/test_outages.py", "tests/unit/test_recorder.py"),
            (RUNS_REDIS,),
            sample=60,
        ),
        Module(
            "repository",
            "conveyor/runs/repository.py",
            ("*",),
            ("tests/integration/test_run_storage.py", RUN_GUARDS),
            (RUNS_REDIS,),
            sample=100,
        ),
        Module(
            "claim (steps.claim_run)",
            "conveyor/workers/steps.py",
            ("x_claim_run",),
            (RUN_GUARDS, "tests/unit/test_claim.py"),
            (RUNS_REDIS,),
        ),
        Module(
            "effect_once",
            "conveyor/effects.py",
            ("*",),
            ("tests/faults/test_effect_once.py", "tests/faults/test_effect_once_keys.py"),
        ),
    ],
    "data": [
        Module(
            "scaling formula",
            "conveyor/metrics/scaling.py",
            ("*",),
            ("tests/unit/test_scaling.py", "tests/unit/test_scaling_edges.py"),
        ),
        Module(
            "queue reading",
            "conveyor/metrics/queues.py",
            ("*",),
            ("tests/integration/test_metrics.py", "tests/unit/test_queue_reading.py"),
            sample=80,
        ),
        Module(
            "memory scoping",
            "conveyor/memory/store.py",
            (
                "x__recall_statement",
                "xǁMemoryStoreǁremember",
                "xǁMemoryStoreǁ_live_duplicates",
                "xǁMemoryStoreǁrecall",
                "xǁMemoryStoreǁsearch",
                "xǁMemoryStoreǁ_scope",
                "xǁMemoryStoreǁforget",
                "xǁMemoryStoreǁstats",
                "xǁMemoryStoreǁsweep_expired",
            ),
            ("tests/integration/test_memory_store.py", "tests/integration/test_memory_scoping.py"),
            (
                "tests/integration/test_memory.py",
                # _RECALL is built at import: only a worker runs a mutant of it
                "tests/integration/test_memory_scoping.py::"
                "test_a_token_budget_is_inclusive_through_a_worker",
            ),
            sample=80,
        ),
        Module(
            "vector seq (store)",
            "conveyor/vector/store.py",
            (
                "xǁVectorStoreǁ_take_seqs",
                "xǁVectorStoreǁupsert",
                "xǁVectorStoreǁdelete",
                "xǁVectorStoreǁcatch_up",
                "xǁVectorStoreǁchanges_since",
                "xǁVectorStoreǁhead",
            ),
            ("tests/integration/test_vector_maintain.py", "tests/integration/test_vector_seq.py"),
            ("tests/integration/test_vector.py",),
            sample=60,
        ),
        Module(
            "vector seq (replica)",
            "conveyor/vector/replica.py",
            (
                "xǁReplicaǁ__init__",
                "xǁReplicaǁapply",
                "xǁReplicaǁ_retire",
                "xǁReplicaǁ_all_live",
                "xǁReplicaǁrebuild",
                "xǁReplicaǁsearch",
                "xǁReplicaǁlive_vectors",
            ),
            (
                "tests/unit/test_vector_replica.py",
                "tests/unit/test_vector_ivf.py",
                "tests/unit/test_vector_replica_seqs.py",
                "tests/integration/test_vector_maintain.py",
            ),
            sample=100,
        ),
    ],
}

SEED = 17
PYTEST_ARGS = ["-p", "no:cacheprovider", "--timeout=60"]
STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 5: "no tests"}
TIMEOUTS = {36, 24, -24, 152, 255}


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(workdir: Path, modules: list[Module], fresh: bool) -> None:
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    if not workdir.exists():
        shutil.copytree(
            ROOT,
            workdir,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "mutants", "__pycache__", "*.egg-info", ".conveyor", ".mypy_cache"
            ),
        )
    else:  # new tests since the last run: mutmut copies tests/ into mutants/ from here
        shutil.copytree(
            ROOT / "tests",
            workdir / "tests",
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    defer_drops(workdir)
    present = [t for m in modules for t in (*m.tests, *m.worker_tests)]
    selection = sorted({t.split("::")[0] for t in present if (workdir / t.split("::")[0]).exists()})
    config = (
        "\n\n[tool.mutmut]\n"
        'source_paths = ["conveyor"]\n'
        f"only_mutate = {toml_list(sorted({m.path for m in modules}))}\n"
        f"pytest_add_cli_args = {toml_list(PYTEST_ARGS)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(selection)}\n"
        "timeout_constant = 10.0\n"
    )
    pyproject = workdir / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    pyproject.write_text(text + config)


DROP_BLOCK = """    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
"""
DROP_LATER = """    finally:
        with open(os.environ["CONVEYOR_MUTATION_DROPS"], "a") as drops:
            drops.write(name + "\\n")
"""


def defer_drops(workdir: Path) -> None:
    """In the copy, the tests' scratch databases are listed for drop_databases() instead of
    dropped at teardown. A DROP DATABASE waits until every backend of the server has handled
    a barrier, and one backend stuck writing to a client that does not read (a LISTEN
    connection nobody drains, e.g. a benchmark's Client that submits without waiting) holds
    it for minutes: every mutant's teardown would then hang, fail and count as a kill."""
    services = workdir / "tests" / "support" / "services.py"
    text = services.read_text()
    if DROP_LATER not in text:
        if DROP_BLOCK not in text:
            raise SystemExit(f"{services}: scratch_database changed; update DROP_BLOCK")
        services.write_text(text.replace(DROP_BLOCK, DROP_LATER))


def drop_databases(workdir: Path) -> None:
    """Drop the scratch databases the tests of this copy made (waits out any stall)."""
    import psycopg
    from psycopg import sql

    listed = workdir / "scratch-databases.txt"
    if not listed.exists():
        return
    names = sorted(set(listed.read_text().split()))
    with psycopg.connect(FlushWatch.PG_ADMIN, autocommit=True) as conn:
        for name in names:
            statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(statement.format(sql.Identifier(name)))
    listed.unlink()
    print(f"dropped {len(names)} scratch database(s)")


def mutmut(workdir: Path, env: dict[str, str], *args: str) -> int:
    command = [sys.executable, "-m", "mutmut", *args]
    print("$", " ".join(command), flush=True)
    return subprocess.call(command, cwd=workdir, env=env)


def expand(tests: tuple[str, ...], durations: dict[str, float]) -> set[str]:
    """Node ids of `tests` (files or node ids) among the tests mutmut collected."""
    out = set()
    for t in tests:
        out |= {n for n in durations if n == t or n.startswith(t + "::")}
    return out


def remap(workdir: Path, modules: list[Module]) -> None:
    path = workdir / "mutants" / "mutmut-stats.json"
    stats = json.loads(path.read_text())
    durations = stats["duration_by_test"]
    by_function = stats["tests_by_mangled_function_name"]
    functions = set(by_function)
    for meta in (workdir / "mutants").rglob("*.py.meta"):
        for key in json.loads(meta.read_text())["exit_code_by_key"]:
            functions.add(key.rsplit("__mutmut_", 1)[0])
    for function in sorted(functions):
        module = next((m for m in modules if m.owns(function)), None)
        if module is None:
            continue
        allowed = expand(module.tests, durations) | expand(module.worker_tests, durations)
        mapped = {t for t in by_function.get(function, []) if t in allowed}
        by_function[function] = sorted(mapped | expand(module.worker_tests, durations))
    path.write_text(json.dumps(stats, indent=2))


def mutants_of(workdir: Path, module: Module) -> dict[str, int | None]:
    """The module's mutants (its sample, if it has one) and their last exit codes."""
    meta = workdir / "mutants" / (module.path + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    mine = {k: v for k, v in codes.items() if module.owns(k.rsplit("__mutmut_", 1)[0])}
    if module.sample is not None and module.sample < len(mine):
        chosen = random.Random(SEED).sample(sorted(mine), module.sample)
        mine = {k: mine[k] for k in sorted(chosen)}
    return mine


def results(
    workdir: Path, modules: list[Module], before: Path | None = None
) -> list[dict[str, object]]:
    """Per module counts. With `before` (the --json of an earlier run), a mutant it reports
    killed stays killed, and the others take this WORKDIR's result (a --survivors run)."""
    earlier = {r["module"]: r for r in json.loads(before.read_text())} if before else {}
    rows = []
    for module in modules:
        mine = mutants_of(workdir, module)
        if module.name in earlier:
            old = earlier[module.name]
            again = {k: v for k, v in mine.items() if k in old["survived"] + old["no tests"]}
            timeouts = old.get("timeout names", [])
            mine = {k: 36 if k in timeouts else 1 for k in mine}  # what it did not list survived
            mine.update(again)
        count: dict[str, list[str]] = {}
        for key, code in sorted(mine.items()):
            status = "timeout" if code in TIMEOUTS else STATUS.get(code, f"other ({code})")
            if code is None:
                status = "not checked"
            count.setdefault(status, []).append(key)
        killed = len(count.get("killed", [])) + len(count.get("timeout", []))
        rows.append(
            {
                "module": module.name,
                "path": module.path,
                "mutants": len(mine),
                "killed": len(count.get("killed", [])),
                "killed names": count.get("killed", []),
                "timeout names": count.get("timeout", []),
                "timeout": len(count.get("timeout", [])),
                "survived": count.get("survived", []),
                "no tests": count.get("no tests", []),
                "other": {k: v for k, v in count.items() if k not in (*STATUS.values(), "timeout")},
                "unfinished": count.get("not checked", []) + count.get("timeout", []),
                "killed share": killed / len(mine) if mine else 0.0,
            }
        )
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    print("| module | mutants | killed | timeout | survived | no tests | killed share |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        survived, none = r["survived"], r["no tests"]
        assert isinstance(survived, list) and isinstance(none, list)
        share = r["killed share"]
        assert isinstance(share, float)
        print(
            f"| {r['module']} (`{r['path']}`) | {r['mutants']} | {r['killed']} | {r['timeout']} "
            f"| {len(survived)} | {len(none)} | {share:.0%} |"
        )
    for r in rows:
        survived, none = r["survived"], r["no tests"]
        assert isinstance(survived, list) and isinstance(none, list)
        if survived or none or r["other"]:  # not checked, if interrupted
            print(f"\n{r['module']}: survived {survived}; no tests {none}; other {r['other']}")


class FlushWatch:
    """A sentinel key in the tests' Redis db, checked every second: did anyone flush it?"""

    PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

    def __init__(self, db: int) -> None:
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        global redis_errors
        redis_errors = (redis.RedisError, OSError)
        self.flushes: list[float] = []
        self.stalls: list[float] = []
        self.pg_admin = self.PG_ADMIN
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> FlushWatch:
        self.client.set("conveyor-mutation-sentinel", "1")
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            try:
                if not self.client.exists("conveyor-mutation-sentinel"):
                    self.flushes.append(time.time())
                    self.client.set("conveyor-mutation-sentinel", "1")
            except redis_errors:  # a Redis hiccup is not a flush
                pass
            if self._stop.wait(4.0):
                return
            self._check_barrier()

    def _check_barrier(self) -> None:
        """A DROP DATABASE that waits on every backend of the server (ProcSignalBarrier) for
        long: any backend stuck writing to a client that does not read (a LISTEN connection
        nobody drains) holds it, and then every test's scratch database hangs at teardown."""
        import psycopg

        try:
            with psycopg.connect(self.pg_admin, connect_timeout=5, autocommit=True) as conn:
                stuck = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'ProcSignalBarrier'"
                    " AND now() - query_start > interval '20 seconds'"
                ).fetchone()
        except psycopg.Error:
            return
        if stuck and stuck[0]:
            self.stalls.append(time.time())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.delete("conveyor-mutation-sentinel")


def stop_leftovers(workdir: Path) -> None:
    """SIGKILL every process of ours running in WORKDIR (orphaned worker subprocesses)."""
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            python = b"python" in (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if python and (cwd == workdir or workdir in cwd.parents):
            print(f"stopping leftover process {proc.name} in {cwd}", flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", choices=sorted(MODULES), required=True)
    parser.add_argument("--module", action="append", help="only these modules (by name)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--redis-db", type=int, default=12, help="the tests' Redis db (12)")
    parser.add_argument("--amqp-slot", type=int, default=9, help="vhost conveyor-test-N (9)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants run at once (1)")
    parser.add_argument("--fresh", action="store_true", help="start over in a new WORKDIR")
    parser.add_argument("--report", action="store_true", help="only print the last results")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="run only the mutants not checked yet or that timed out (after an interruption)",
    )
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="run only the mutants that survived (or had no tests) last time, e.g. after new tests",
    )
    parser.add_argument(
        "--survivors-from",
        type=Path,
        help="with --survivors: the --json file of the run whose survivors to take (mutmut "
        "forgets its results when the test selection changes, e.g. with new test files)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="with --report: the --json of the run before a --survivors run, to count both",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    modules = [m for m in MODULES[args.group] if not args.module or m.name in args.module]
    workdir = (args.workdir or Path(f"/tmp/conveyor-mutation-{args.group}")).resolve()
    if not args.report:
        from importlib.metadata import version

        if version("mutmut") != MUTMUT_VERSION:
            print(f"note: written for mutmut {MUTMUT_VERSION}, found {version('mutmut')}")
        env = {
            **os.environ,
            "CONVEYOR_TEST_REDIS_DB": str(args.redis_db - args.amqp_slot),
            "PYTEST_XDIST_WORKER": f"gw{args.amqp_slot}",
            "CONVEYOR_MUTATION_DROPS": str(workdir / "scratch-databases.txt"),
            # mutmut forks every mutant from a process that has run the tests; an OpenMP
            # thread pool (faiss) does not survive a fork, and the child hangs in its first
            # parallel faiss call. One thread makes no pool.
            "OMP_NUM_THREADS": "1",
        }
        prepare(workdir, modules, args.fresh)
        with FlushWatch(args.redis_db) as watch:
            try:
                # Generation and stats (of new tests only, after the first time): no mutant
                # matches this name, so mutmut stops (with an assertion) once they are saved.
                mutmut(workdir, env, "run", "--max-children", "1", "stats-only-no-such*")
                remap(workdir, modules)
                patterns = [
                    name
                    for m in modules
                    for name in (
                        sorted(mutants_of(workdir, m))
                        if m.sample
                        else [f"{m.dotted}.{p}__mutmut_*" for p in m.functions]
                    )
                ]
                if args.resume:
                    rows = results(workdir, modules)
                    patterns = [n for r in rows for n in r["unfinished"]]  # type: ignore[attr-defined]
                    if not patterns:
                        print("nothing left to run")
                        return 0
                elif args.survivors:
                    rows = (
                        json.loads(args.survivors_from.read_text())
                        if args.survivors_from
                        else results(workdir, modules)
                    )
                    rows = [r for r in rows if any(r["module"] == m.name for m in modules)]
                    patterns = [n for r in rows for n in (*r["survived"], *r["no tests"])]  # type: ignore[misc]
                    if not patterns:
                        print("no survivors to run again")
                        return 0
                mutmut(workdir, env, "run", "--max-children", str(args.max_children), *patterns)
            finally:
                stop_leftovers(workdir)
                drop_databases(workdir)
        print(f"\nRedis db {args.redis_db} flushed by someone else at: {watch.flushes or 'never'}")
        if watch.stalls:
            print(
                f"PostgreSQL: DROP DATABASE stalled (ProcSignalBarrier) from "
                f"{time.ctime(watch.stalls[0])} to {time.ctime(watch.stalls[-1])}: tests that "
                "ran then may have failed at teardown; run those modules again"
            )
        else:
            print("PostgreSQL: no DROP DATABASE stalled during the run")
    rows = results(workdir, modules, args.before)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
