"""Prompt memory: remember throughput versus raw inserts, recall/search latency versus ping.

One invocation: a scratch database, Redis db --redis-db as broker and --redis-db + 1 as the
recall cache (CONVEYOR_CACHE_URL), and two worker subprocesses: `conveyor worker --pool memory`
(threads, --memory-concurrency) and `--pool default` (--ping-pool) for conveyor.ping.

Throughput, items/s, each measurement in a fresh namespace; --rounds rounds with the method
order rotating; rate = all items of a method / all its seconds:
  remember_batched  --batches runs of --batch-size items (one session each), all submitted
                    with client.memory.remember_async(ns, s, items=[...]), then
                    client.wait_many(ids); clock from the first submit to wait_many's return
  remember_single   --singles sequential client.memory.remember(ns, s, text) (20 sessions)
  single_async      the same items submitted at once with remember_async, then wait_many
  raw_executemany   raw psycopg, one connection, sequential: cursor.executemany(INSERT INTO
                    memory_items ...), one transaction per batch of --batch-size
  raw_copy          the same with cursor.copy("COPY memory_items (...) FROM STDIN")
Items: ~200 chars of varied text, unique (no dedup hit), a role and metadata. Raw rows get the
store's values (uuid4, content_hash, count_tokens, escape_nul, JSON metadata), computed inside
the timing; raw does not touch memory_sessions nor look for duplicates as remember does.
Target: remember_batched >= 50 % of the faster raw method.

Latency, ms: sequential calls, --count per side after --warmup, interleaved in blocks of
--block with a rotating order:
  ping          client.submit("conveyor.ping", {"i": i}) then client.wait(id)
  recall_cached client.memory.recall(ns, "hot", last=20), a session of --recall-items items:
                every repeat is served from the Redis recall cache
  recall_db     the same on another such session whose cached window is invalidated before
                each call (untimed RecallCache.invalidate_session, as a remember does): every
                call reads PostgreSQL, then refills the cache
  search        client.memory.search(ns, "<two words>", limit=10) in a namespace of
                --search-items items, over 50 word pairs; memory_items is ANALYZEd first
Target: recall p50 <= 2 x ping p50, judged for recall_cached and recall_db separately.

Run from the repository root:  .venv/bin/python -m benchmarks.memory
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from benchmarks import _harness as h

TARGET_RATE = 0.5
TARGET_RECALL = 2.0
COLUMNS = (
    "id, namespace, session, seq, role, content, escaped, metadata, "
    "content_hash, tokens, created_at, expires_at"
)
COPY_SQL = f"COPY memory_items ({COLUMNS}) FROM STDIN"
INSERT_SQL = (
    f"INSERT INTO memory_items ({COLUMNS}) "  # noqa: S608 - constants only
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)"
)
METHODS = ["remember_batched", "raw_copy", "raw_executemany", "remember_single", "single_async"]
SINGLES = {"remember_single", "single_async"}
SINGLE_SESSIONS = 20
TOPICS = ["billing", "travel", "code", "health", "music"]
_SYL = "ka lo mi ter son val dra pen quo rix tal ven bor sel nim gru fe zu ath or".split()  # noqa: SIM905
VOCAB = [a + b for a in _SYL for b in _SYL]
VOCAB += ["".join(p) for p in itertools.islice(itertools.product(_SYL, repeat=3), 0, None, 11)]
random.Random(7).shuffle(VOCAB)
CUM = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(VOCAB))))  # Zipf
QUERIES = [f"{VOCAB[5 + i % 10]} {VOCAB[15 + (i * 7) % 45]}" for i in range(50)]
Item = dict[str, Any]
Timed = Callable[[str, list[list[Item]]], float]


def make_items(rng: random.Random, n: int, tag: str) -> list[Item]:
    items = []
    for i in range(n):
        text = " ".join(rng.choices(VOCAB, cum_weights=CUM, k=40))[:190].rsplit(" ", 1)[0]
        items.append(
            {
                "content": f"{text} {tag}-{i}.",
                "role": "user" if i % 2 == 0 else "assistant",
                "metadata": {"n": i, "topic": TOPICS[i % len(TOPICS)]},
            }
        )
    return items


def raw_rows(ns: str, session: str, items: list[Item]) -> list[tuple[Any, ...]]:
    from conveyor.memory.text import content_hash, count_tokens, escape_nul

    now, rows = datetime.now(UTC), []
    for seq, item in enumerate(items, 1):
        stored, escaped = escape_nul(item["content"])
        rows.append(
            (str(uuid.uuid4()), ns, session, seq, item["role"], stored, escaped,
             json.dumps(item["metadata"]), content_hash(item["content"]),
             count_tokens(item["content"]), now, None)
        )  # fmt: skip
    return rows


class Bench:
    def __init__(self, client: Any, conn: psycopg.Connection[Any], args: argparse.Namespace):
        self.client, self.conn, self.args = client, conn, args

    def check(self, runs: dict[str, Any], expected: int) -> None:
        bad = [r for r in runs.values() if r.status.value != "succeeded"]
        if bad:
            raise RuntimeError(f"{len(bad)} run(s) failed, e.g. {bad[0].error_message}")
        stored = sum(not i["deduped"] for r in runs.values() for i in r.output["items"])
        if stored != expected:
            raise RuntimeError(f"stored {stored} items, expected {expected}")

    def remember_batched(self, ns: str, batches: list[list[Item]]) -> float:
        mem, t0 = self.client.memory, time.perf_counter()
        ids = [mem.remember_async(ns, f"s{b}", items=items) for b, items in enumerate(batches)]
        runs = self.client.wait_many(ids, timeout=self.args.timeout)
        elapsed = time.perf_counter() - t0
        self.check(runs, sum(map(len, batches)))
        return elapsed

    def singles(self, ns: str, batches: list[list[Item]], at_once: bool) -> float:
        mem, t0, out = self.client.memory, time.perf_counter(), []
        for i, it in enumerate(batches[0]):
            call = mem.remember_async if at_once else mem.remember
            kw = {"role": it["role"], "metadata": it["metadata"]}
            out.append(call(ns, f"s{i % SINGLE_SESSIONS}", it["content"], **kw))
        runs = self.client.wait_many(out, timeout=self.args.timeout) if at_once else {}
        elapsed = time.perf_counter() - t0
        if at_once:
            self.check(runs, len(batches[0]))
        elif any(done.items[0].deduped for done in out):
            raise RuntimeError("an item was deduped")
        return elapsed

    def raw(self, ns: str, batches: list[list[Item]], copy: bool) -> float:
        t0 = time.perf_counter()
        for b, items in enumerate(batches):
            rows = raw_rows(ns, f"s{b}", items)
            with self.conn.transaction(), self.conn.cursor() as cur:
                if copy:
                    with cur.copy(COPY_SQL) as out:
                        for row in rows:
                            out.write_row(row)
                else:
                    cur.executemany(INSERT_SQL, rows)
        return time.perf_counter() - t0

    def count(self, ns: str) -> int:
        sql = "SELECT count(*) FROM memory_items WHERE namespace = %s"
        return int(self.conn.execute(sql, (ns,)).fetchone()[0])  # type: ignore[index]


def throughput(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    methods: dict[str, Timed] = {
        "remember_batched": bench.remember_batched,
        "raw_copy": lambda ns, b: bench.raw(ns, b, copy=True),
        "raw_executemany": lambda ns, b: bench.raw(ns, b, copy=False),
        "remember_single": lambda ns, b: bench.singles(ns, b, at_once=False),
        "single_async": lambda ns, b: bench.singles(ns, b, at_once=True),
    }
    rng = random.Random(args.seed)
    totals = {m: [0, 0.0] for m in methods}
    rounds = []
    for r in range(args.rounds):
        order = METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]
        this: dict[str, float] = {}
        for name in order:
            ns = f"tp-{name}-r{r}"
            if name in SINGLES:
                batches = [make_items(rng, args.singles, ns)]
            else:
                batches = [
                    make_items(rng, args.batch_size, f"{ns}-{b}") for b in range(args.batches)
                ]
            n = sum(map(len, batches))
            seconds = methods[name](ns, batches)
            if bench.count(ns) != n:
                raise RuntimeError(f"{name}: {bench.count(ns)} rows in {ns}, expected {n}")
            totals[name][0] += n
            totals[name][1] += seconds
            this[name] = n / seconds
            print(f"[round {r + 1}/{args.rounds}] {name}: {n / seconds:.0f}/s", file=sys.stderr)
        rounds.append(this)
    rates = {m: {"items": n, "seconds": s, "rate": n / s} for m, (n, s) in totals.items()}
    batched = rates["remember_batched"]["rate"]
    vs = {raw: batched / rates[raw]["rate"] for raw in ("raw_copy", "raw_executemany")}
    faster = max(vs, key=lambda raw: rates[raw]["rate"])
    return {
        "rates": rates,
        "per_round_rates": rounds,
        "batched_over_raw": vs,
        "faster_raw": faster,
        "target": f"remember_batched / {faster} >= {TARGET_RATE}",
        "target_met": vs[faster] >= TARGET_RATE,
    }


def latency(bench: Bench, args: argparse.Namespace, cache_url: str) -> dict[str, Any]:
    from conveyor.memory.cache import RecallCache

    client, mem, rng = bench.client, bench.client.memory, random.Random(args.seed + 1)
    for session in ("hot", "cold"):
        mem.remember("lat", session, items=make_items(rng, args.recall_items, session))
    fill, size = make_items(rng, args.search_items, "q"), args.batch_size
    bench.remember_batched("search", [fill[i : i + size] for i in range(0, len(fill), size)])
    bench.conn.execute("ANALYZE memory_items")
    rows = bench.count("search"), bench.count("lat")
    total = int(bench.conn.execute("SELECT count(*) FROM memory_items").fetchone()[0])  # type: ignore[index]
    cache = RecallCache.from_url(cache_url)
    info: dict[str, list[float]] = {"recall_cached": [], "recall_db": [], "search": []}

    def ping(i: int) -> None:
        run = client.wait(client.submit("conveyor.ping", {"i": i}), timeout=30.0)
        if run.status.value != "succeeded":
            raise RuntimeError(f"ping ended {run.status.value}: {run.error_message}")

    def recall(name: str, session: str) -> Callable[[int], None]:
        def call(_: int) -> None:
            window = mem.recall("lat", session, last=20)
            if len(window.items) != 20:
                raise RuntimeError(f"recall returned {len(window.items)} items")
            info[name].append(float(window.cached))

        return call

    def search(i: int) -> None:
        info["search"].append(len(mem.search("search", QUERIES[i % len(QUERIES)], limit=10).hits))

    sides: list[tuple[str, Callable[[int], None], Callable[[], None] | None]] = [
        ("ping", ping, None),
        ("recall_cached", recall("recall_cached", "hot"), None),
        ("recall_db", recall("recall_db", "cold"), lambda: cache.invalidate_session("lat", "cold")),
        ("search", search, None),
    ]
    samples: dict[str, list[float]] = {name: [] for name, _, _ in sides}
    for _, call, before in sides:
        for i in range(args.warmup):
            if before:
                before()
            call(i)
    for values in info.values():
        values.clear()
    done, rotation = 0, 0
    while done < args.count:
        size = min(args.block, args.count - done)
        order = sides[rotation % len(sides) :] + sides[: rotation % len(sides)]
        for name, call, before in order:
            for i in range(done, done + size):
                if before:
                    before()
                t0 = time.perf_counter()
                call(i)
                samples[name].append((time.perf_counter() - t0) * 1000.0)
        done, rotation = done + size, rotation + 1
    stats = {name: h.percentiles(values) for name, values in samples.items()}
    ping50 = stats["ping"]["p50"]
    ratios = {name: s["p50"] / ping50 for name, s in stats.items() if name != "ping"}
    return {
        "latency_ms": stats,
        "p50_over_ping": ratios,
        "p99_over_ping": {n: s["p99"] / stats["ping"]["p99"] for n, s in stats.items()},
        "cached_fraction": {n: sum(v) / len(v) for n, v in info.items() if n != "search"},
        "search_hits_mean": sum(info["search"]) / len(info["search"]),
        "rows": {"search_namespace": rows[0], "recall_sessions": rows[1], "table": total},
        "target": f"recall p50 / ping p50 <= {TARGET_RECALL}",
        "target_met": {n: ratios[n] <= TARGET_RECALL for n in ("recall_cached", "recall_db")},
    }


def wait_ready(client: Any, agent: str, payload: dict[str, Any], worker: h.Worker) -> float:
    from conveyor.errors import RunTimeout

    run_id, deadline = client.submit(agent, payload), time.monotonic() + 120.0
    while True:
        worker.check_alive()
        try:
            run = client.wait(run_id, timeout=1.0)
        except RunTimeout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{agent}: no answer after 120s\n{worker.log_tail()}") from None
            continue
        if run.status.value != "succeeded":
            raise RuntimeError(f"{agent} ended {run.status.value}: {run.error_message}")
        return round(time.monotonic() - worker.started_at, 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.app import create_app
    from conveyor.client import Client
    from conveyor.config import load_settings
    from conveyor.models.migrate import upgrade

    machine = h.machine_info()
    with (
        h.scratch_database("mem") as db,
        h.scratch_redis(args.redis_db, args.redis_db + 1) as (broker, cache_url),
        h.Workers(args.keep_logs) as workers,
    ):
        url = h.pg_url(db, "postgresql+psycopg")
        upgrade(url)
        prefix = h.unique("mem") + "."
        pools = {
            "default": {"kind": args.ping_pool, "concurrency": args.ping_concurrency},
            "memory": {"kind": "threads", "concurrency": args.memory_concurrency},
        }
        env = h.conveyor_env(broker, url, prefix, args.ping_pool, args.ping_concurrency)
        env.update(CONVEYOR_POOLS=json.dumps(pools), CONVEYOR_CACHE_URL=cache_url)
        memory_argv = [h.PYTHON, "-m", "conveyor", "worker", "--pool", "memory"]
        memory_argv += ["--concurrency", str(args.memory_concurrency), "--loglevel", args.loglevel]
        mem_worker = workers.start("memory", memory_argv, env)
        ping_argv = h.conveyor_worker_argv(args.ping_concurrency, args.loglevel)
        ping_worker = workers.start("default", ping_argv, env)
        settings = load_settings(
            broker_url=broker,
            database_url=url,
            queue_prefix=prefix,
            pools=pools,
            cache_url=cache_url,
        )
        client = Client(create_app(settings))
        try:
            ready = {
                "memory": wait_ready(
                    client, "memory.recall", {"namespace": "x", "session": "x"}, mem_worker
                ),
                "default": wait_ready(client, "conveyor.ping", {"i": -1}, ping_worker),
            }
            with psycopg.connect(h.pg_url(db), autocommit=True) as conn:
                bench = Bench(client, conn, args)
                tp = throughput(bench, args)
                lat = latency(bench, args, cache_url)
            for worker in (mem_worker, ping_worker):
                worker.check_alive()
        finally:
            client.close()
    keys = "rounds batches batch_size singles count warmup block recall_items search_items"
    config = {k: getattr(args, k) for k in keys.split()} | {
        "memory_pool": f"threads c={args.memory_concurrency}",
        "ping_pool": f"{args.ping_pool} c={args.ping_concurrency}",
        "loglevel": args.loglevel,
    }
    head = {"benchmark": "memory", "machine": machine, "config": config, "ready_after_s": ready}
    return head | {"throughput": tp, "latency": lat}


def report(result: dict[str, Any]) -> None:
    tp, lat, cfg = result["throughput"], result["latency"], result["config"]
    rates = tp["rates"]
    rows = [
        [m, r["items"], r["seconds"], r["rate"], r["rate"] / rates["raw_copy"]["rate"],
         r["rate"] / rates["raw_executemany"]["rate"]]
        for m, r in rates.items()
    ]  # fmt: skip
    h.print_table(
        f"Remember throughput, items/s ({cfg['rounds']} rounds, batch {cfg['batch_size']}, "
        f"memory pool {cfg['memory_pool']}, {result['machine']['date']})",
        ["method", "items", "seconds", "items/s", "/ raw_copy", "/ raw_executemany"],
        rows,
    )
    for raw, ratio in tp["batched_over_raw"].items():
        print(f"  remember_batched / {raw} = {ratio:.2f}")
    print(
        f"verdict: remember_batched / {tp['faster_raw']} (the faster raw) = "
        f"{tp['batched_over_raw'][tp['faster_raw']]:.2f} "
        f"(target >= {TARGET_RATE}: {'MET' if tp['target_met'] else 'MISSED'})"
    )
    stats, cached = lat["latency_ms"], lat["cached_fraction"]
    notes = {n: f"cached {100 * f:.0f}%" for n, f in cached.items()}
    notes["search"] = f"{lat['search_hits_mean']:.1f} hits"
    rows = [
        [n, s["n"], s["p50"], s["p90"], s["p99"], s["mean"], s["max"],
         lat["p50_over_ping"].get(n, 1.0), lat["p99_over_ping"][n], notes.get(n, "")]
        for n, s in stats.items()
    ]  # fmt: skip
    h.print_table(
        f"Latency, ms (ping on {cfg['ping_pool']}; table {lat['rows']['table']} rows, "
        f"search namespace {lat['rows']['search_namespace']})",
        ["side", "n", "p50", "p90", "p99", "mean", "max", "p50/ping", "p99/ping", ""],
        rows,
    )
    for name, met in lat["target_met"].items():
        print(
            f"verdict: {name} p50 / ping p50 = {lat['p50_over_ping'][name]:.2f} "
            f"(target <= {TARGET_RECALL}: {'MET' if met else 'MISSED'})"
        )
    print(f"info: search p50 / ping p50 = {lat['p50_over_ping']['search']:.2f} (no target)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--rounds", type=int, default=2, help="throughput rounds, method order rotating (2)")
    add("--batches", type=int, default=20, help="batches per batched measurement (20)")
    add("--batch-size", type=int, default=500, help="items per batch, max 1000 (500)")
    add("--singles", type=int, default=500, help="items per single-item measurement (500)")
    add("-n", "--count", type=int, default=200, help="timed latency calls per side (200)")
    add("--warmup", type=int, default=20, help="untimed latency calls per side (20)")
    add("--block", type=int, default=25, help="latency interleaving block size (25)")
    add("--recall-items", type=int, default=200, help="items in each recall session (200)")
    add("--search-items", type=int, default=3000, help="items in the search namespace (3000)")
    add("--memory-concurrency", type=int, default=4, help="memory pool threads (4)")
    add("--ping-pool", choices=["prefork", "threads", "solo"], default="threads")
    add("--ping-concurrency", type=int, default=2, help="default pool concurrency (2)")
    add("--redis-db", type=int, default=8, help="broker db; +1 is the cache (both flushed!) (8)")
    add("--timeout", type=float, default=600.0, help="seconds to wait for a batch of runs")
    add("--seed", type=int, default=1, help="text generator seed (1)")
    h.add_common_args(parser, raw_celery=False)
    return h.run_main(parser, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
