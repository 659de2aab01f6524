"""Load soak: a mixed workload across all four pools, every run accounted for, worker memory.

One invocation: a scratch database, Redis db --redis-db as broker and --redis-db + 1 as the
cache (both flushed before and after), a temporary CONVEYOR_DATA_DIR, and one
`conveyor worker --pool P` subprocess per built-in pool with its shipped settings (default:
prefork c=2, memory: threads c=4, vector: prefork c=1, analytics: prefork c=1).

Workload: --count runs (default 100 000), shuffled with --seed, submitted with
Client.submit_many in chunks of --chunk while at most --inflight runs are unfinished:
  default    conveyor.ping {"i": n}                                     --mix 0.72
  memory     memory.remember (one item; 200 sessions) / memory.recall   0.10 / 0.10
  vector     vector.search, one text query, k=5, include=[], over a
             collection of 2 000 short texts loaded before the clock     0.075
  analytics  analytics.report over the last 60 s                        0.005
Accounted: when every submitted id has a final status in agent_runs (or --timeout passes),
the runs are counted by agent and status; `lost` are ids with no row or no final status.
Memory: VmRSS summed over each worker's process tree (main process and children) after
--warmup runs, each time another tenth of the runs has finished, and at the end, with the
largest VmHWM (peak) of any of its processes: a leak shows as steady growth over the tenths.
A prefork worker's main process also holds one cancelled timer per task until that task's
hard time limit would have passed (kombu keeps cancelled entries in its heap until their
time), so its RSS rises for the first `time limit` seconds and then levels off; --time-limit
shortens that window to show the plateau within the run.

Baseline, same invocation (after the soak, workers stopped): raw Celery
(benchmarks.raw_app, JSON, Redis result backend) with the same four worker processes (same
pool kind and concurrency, one queue each), --raw-count no-op tasks split over the queues in
the workload's proportions, drained while all are queued; its rate is reported beside
conveyor's and as a ratio. conveyor's work is real (PostgreSQL recording, memory writes,
faiss searches, reports) and raw Celery's is nothing, so the ratio is the price of the whole
platform on this mix, not of one layer.

Run from the repository root:  .venv/bin/python -m benchmarks.soak [--count 100000] [--json]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import redis

from benchmarks import _harness as h

POOLS = {"default": ("prefork", 2), "memory": ("threads", 4), "vector": ("prefork", 1)}
POOLS["analytics"] = ("prefork", 1)
MIX = {
    "conveyor.ping": 0.72,
    "memory.remember": 0.10,
    "memory.recall": 0.10,
    "vector.search": 0.075,
    "analytics.report": 0.005,
}
POOL_OF = {agent: agent.split(".")[0].replace("conveyor", "default") for agent in MIX}
FINAL_STATUSES = ("succeeded", "failed", "rejected", "cancelled")
COLLECTION = "soak"
WORDS = [
    "agent",
    "queue",
    "worker",
    "pool",
    "memory",
    "vector",
    "search",
    "recall",
    "faiss",
    "redis",
    "postgres",
    "celery",
]


def payload(agent: str, n: int, rng: random.Random) -> dict[str, Any]:
    if agent == "conveyor.ping":
        return {"i": n}
    if agent == "memory.remember":
        text = " ".join(rng.choices(WORDS, k=8))
        return {"namespace": "soak", "session": f"s{n % 200}", "items": [{"content": text}]}
    if agent == "memory.recall":
        return {"namespace": "soak", "session": f"s{n % 200}", "last": 20}
    if agent == "vector.search":
        query = " ".join(rng.choices(WORDS, k=4))
        return {"collection": COLLECTION, "queries": [{"text": query}], "k": 5, "include": []}
    return {"since_seconds": 60}


def workload(count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    agents = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    return [(agent, payload(agent, n, rng)) for n, agent in enumerate(agents)]


def tree_memory(pid: int) -> tuple[int, int]:
    """(sum of VmRSS, largest VmHWM) in KiB over `pid` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    rss = peak = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines()
            )
        except OSError:
            continue
        rss += int(fields.get("VmRSS", "0 kB").split()[0])
        peak = max(peak, int(fields.get("VmHWM", "0 kB").split()[0]))
    return rss, peak


def memory_of(workers: dict[str, h.Worker]) -> dict[str, dict[str, int]]:
    out = {}
    for pool, worker in workers.items():
        assert worker.proc is not None
        rss, peak = tree_memory(worker.proc.pid)
        out[pool] = {"rss_kb": rss, "peak_kb": peak}
    return out


def finished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM agent_runs WHERE status = ANY(%s)", (list(FINAL_STATUSES),)
    ).fetchone()
    return int(row[0]) if row else 0


def prepare_vector(client: Any, rng: random.Random) -> None:
    client.vector.create_collection(COLLECTION, index="flat", exist_ok=True)
    texts = [" ".join(rng.choices(WORDS, k=6)) + f" {i}" for i in range(2000)]
    client.vector.upsert(COLLECTION, [{"id": f"t{i}", "text": t} for i, t in enumerate(texts)])


def soak(args: argparse.Namespace, env: dict[str, str], workers: h.Workers) -> dict[str, Any]:
    from conveyor.app import create_app
    from conveyor.client import Client
    from conveyor.config import load_settings

    settings = load_settings(**{k.removeprefix("CONVEYOR_").lower(): v for k, v in env.items()})
    running = {
        pool: workers.start(
            f"soak-{pool}",
            [h.PYTHON, "-m", "conveyor", "worker", "--pool", pool, "--loglevel", args.loglevel],
            env,
        )
        for pool in POOLS
    }
    jobs = workload(args.count, args.seed)
    ids: list[str] = []
    progress_at = time.monotonic()
    with Client(create_app(settings)) as client, psycopg.connect(env["ADMIN_URL"]) as conn:
        conn.autocommit = True
        client.wait(client.submit("conveyor.ping", {"i": -1}), timeout=120)
        prepare_vector(client, random.Random(args.seed))
        base = finished(conn)
        warm: dict[str, Any] | None = None
        series: list[dict[str, Any]] = []

        def sample(done: int) -> None:
            """A memory reading each time another tenth of the runs has finished."""
            if done >= (len(series) + 1) * args.count // 10:
                series.append({"finished": done, **memory_of(running)})

        t0 = time.monotonic()
        for start in range(0, len(jobs), args.chunk):
            while len(ids) - (finished(conn) - base) > args.inflight:
                for w in running.values():
                    w.check_alive()
                time.sleep(0.2)
            chunk = jobs[start : start + args.chunk]
            for agent in MIX:
                payloads = [p for a, p in chunk if a == agent]
                if payloads:
                    ids += client.submit_many(agent, payloads)
            done = finished(conn) - base
            if warm is None and done >= args.warmup:
                warm = memory_of(running)
            sample(done)
            if time.monotonic() - progress_at > 10:
                progress_at = time.monotonic()
                rate = done / (progress_at - t0)
                print(
                    f"[soak] submitted {len(ids):,}, finished {done:,} ({rate:.0f}/s)",
                    file=sys.stderr,
                )
        deadline = time.monotonic() + args.timeout
        while finished(conn) - base < len(ids) and time.monotonic() < deadline:
            for w in running.values():
                w.check_alive()
            time.sleep(0.2)
            sample(finished(conn) - base)
            if time.monotonic() - progress_at > 10:
                progress_at = time.monotonic()
                print(f"[soak] finished {finished(conn) - base:,} / {len(ids):,}", file=sys.stderr)
        wall = time.monotonic() - t0
        end = memory_of(running)
        rows = conn.execute(
            "SELECT id, agent, status FROM agent_runs WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    statuses = Counter((agent, status) for _, agent, status in rows)
    final = {r[0] for r in rows if r[2] in FINAL_STATUSES}
    for pool in POOLS:
        workers.stop(running[pool])
    return {
        "runs": len(ids),
        "wall_s": round(wall, 1),
        "rate": round(len(ids) / wall, 1),
        "by_agent_status": {f"{a} {s}": n for (a, s), n in sorted(statuses.items())},
        "lost": len(set(ids) - final),
        "memory_after_warmup": warm or end,
        "memory_end": end,
        "memory_series": series,
    }


def raw_baseline(args: argparse.Namespace, broker: str, workers: h.Workers) -> dict[str, Any]:
    from benchmarks.raw_app import TASK_NAME, make_app

    h.flush_redis(broker)
    app = make_app(broker, broker)
    task = app.tasks[TASK_NAME]
    counts = Counter(POOL_OF[a] for a, _ in workload(args.raw_count, args.seed))
    results = redis.Redis.from_url(broker)
    raw_workers = []
    for pool, (kind, conc) in POOLS.items():
        argv = [*h.raw_worker_argv(kind, conc, args.loglevel, f"raw{pool}"), "-Q", f"raw.{pool}"]
        raw_workers.append(workers.start(f"raw-{pool}", argv, h.raw_env(broker, broker)))
    names = {f"raw{pool}@" for pool in POOLS}
    deadline = time.monotonic() + 120
    while len(
        {n.split("@")[0] + "@" for reply in app.control.ping(timeout=0.5) or [] for n in reply}
        & names
    ) < len(names):
        for w in raw_workers:
            w.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("raw Celery workers did not answer a ping within 120 s")
    before = results.dbsize()
    t0 = time.monotonic()
    with app.producer_or_acquire() as producer:
        for pool, n in counts.items():
            for i in range(n):
                task.apply_async(kwargs={"i": i}, queue=f"raw.{pool}", producer=producer)
    while results.dbsize() - before < args.raw_count:
        if time.monotonic() - t0 > args.timeout:
            raise RuntimeError(f"raw Celery: {results.dbsize()} results after {args.timeout}s")
        time.sleep(0.05)
    wall = time.monotonic() - t0
    for w in raw_workers:
        workers.stop(w)
    app.close()
    return {
        "runs": args.raw_count,
        "wall_s": round(wall, 1),
        "rate": round(args.raw_count / wall, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.models.migrate import upgrade

    machine = h.machine_info()
    with (
        h.scratch_database("soak") as db,
        h.scratch_redis(args.redis_db, args.redis_db + 1) as (broker, cache),
        tempfile.TemporaryDirectory(prefix="conveyor-soak-") as data_dir,
        h.Workers(args.keep_logs) as workers,
    ):
        upgrade(h.pg_url(db, "postgresql+psycopg"))
        env = {
            "CONVEYOR_BROKER_URL": broker,
            "CONVEYOR_DATABASE_URL": h.pg_url(db, "postgresql+psycopg"),
            "CONVEYOR_CACHE_URL": cache,
            "CONVEYOR_DATA_DIR": data_dir,
            "CONVEYOR_QUEUE_PREFIX": h.unique("soak") + ".",
        }
        if args.time_limit:
            env["CONVEYOR_TIME_LIMIT"] = str(args.time_limit)
            env["CONVEYOR_SOFT_TIME_LIMIT"] = str(args.time_limit * 0.8)
        conveyor = soak(args, {**env, "ADMIN_URL": h.pg_url(db)}, workers)
        raw = raw_baseline(args, broker, workers)
    return {
        "benchmark": "soak",
        "machine": machine | {"loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "config": {
            k: getattr(args, k) for k in ("count", "raw_count", "inflight", "seed", "time_limit")
        },
        "mix": MIX,
        "conveyor": conveyor,
        "raw_celery": raw,
        "ratio": round(conveyor["rate"] / raw["rate"], 3),
    }


def report(result: dict[str, Any]) -> None:
    c, r = result["conveyor"], result["raw_celery"]
    print(f"soak: {c['runs']:,} runs in {c['wall_s']} s = {c['rate']}/s, lost {c['lost']}")
    print(
        f"raw Celery: {r['runs']:,} no-op tasks in {r['wall_s']} s = {r['rate']}/s; "
        f"conveyor / raw = {result['ratio']}"
    )
    for key, n in c["by_agent_status"].items():
        print(f"  {key:<32} {n:>8,}")
    print("worker memory (MiB): pool, RSS after warm-up -> end, peak")
    for pool in POOLS:
        a, b = c["memory_after_warmup"][pool], c["memory_end"][pool]
        print(
            f"  {pool:<10} {a['rss_kb'] / 1024:7.1f} -> {b['rss_kb'] / 1024:7.1f}"
            f"   peak {b['peak_kb'] / 1024:7.1f}"
        )
    print("worker RSS (MiB) each tenth of the runs: finished, " + ", ".join(POOLS))
    for point in c["memory_series"]:
        sizes = ", ".join(f"{point[pool]['rss_kb'] / 1024:.1f}" for pool in POOLS)
        print(f"  {point['finished']:>8,}  {sizes}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--count", type=int, default=100_000, help="runs in the soak (100000)")
    add("--raw-count", type=int, default=20_000, help="raw Celery baseline tasks (20000)")
    add("--chunk", type=int, default=1000, help="runs per submit_many round (1000)")
    add("--inflight", type=int, default=20_000, help="most unfinished runs at a time (20000)")
    add("--warmup", type=int, default=2000, help="runs before the first memory reading (2000)")
    add("--timeout", type=float, default=3600.0, help="seconds to wait for the last run (3600)")
    add("--redis-db", type=int, default=13, help="broker db; +1 is the cache (both flushed) (13)")
    add("--seed", type=int, default=1, help="workload seed (1)")
    add(
        "--time-limit",
        type=float,
        default=None,
        help="CONVEYOR_TIME_LIMIT for the workers (soft: 80 %%); default conveyor's 300 s",
    )
    h.add_common_args(parser, raw_celery=False)
    return h.run_main(parser, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
