"""Prompt memory: remember throughput versus raw inserts, recall/search latency versus ping.

One invocation: a scratch database, Redis db --redis-db as broker and --redis-db + 1 as the
recall cache (CONVEYOR_CACHE_URL), and two worker subprocesses: `conveyor worker --pool memory`
(threads, --memory-concurrency) and `--pool default` (--ping-pool, default prefork c=2, the
shipped default pool) for conveyor.ping and bench.ping.

Throughput, items/s, once per --memory-concurrency C (default 1, then 4 = the built-in memory
pool's concurrency; the memory worker is restarted with C threads), each measurement in a
fresh namespace; --rounds rounds with the method order rotating; rate = all items of a
method / all its seconds. The raw methods run on equal terms: C threads, each with its own
connection, taking the batches from one shared list (as the worker's C threads take runs):
  remember_batched  --batches runs of --batch-size items (one session each), all submitted
                    with client.memory.remember.submit(ns, s, items=[...]).id, then
                    client.wait_many(ids); clock from the first submit to wait_many's return
  remember_single   --singles sequential client.memory.remember(ns, s, text) (20 sessions)
  single_async      the same items submitted at once with remember.submit, then wait_many
  raw_executemany   raw psycopg, C threads x one connection: cursor.executemany(INSERT INTO
                    memory_items ...), one transaction per batch of --batch-size
  raw_copy          the same with cursor.copy("COPY memory_items (...) FROM STDIN")
Items: ~200 chars of varied text, unique (no dedup hit), a role and metadata. Raw rows get the
store's values (uuid4, content_hash, count_tokens, escape_nul, JSON metadata), computed inside
the timing; raw does not touch memory_sessions nor look for duplicates as remember does.
Target: remember_batched >= 50 % of the faster raw method.

Latency, ms (memory worker at the pool's default concurrency, or the last C given):
sequential calls, --count per side after --warmup, interleaved in blocks of --block with a
rotating order:
  ping          client.submit("conveyor.ping", {"i": i}) then client.wait(id): an idempotent
                agent, like recall and search (none of them is claimed)
  ping_default  the same with "bench.ping" (benchmarks/agents.py): conveyor.ping as a default
                agent, claimed in PostgreSQL before it runs; reported beside ping
  recall_cached client.memory.recall(ns, "hot", last=20), a session of --recall-items items:
                every repeat is served from the Redis recall cache
  recall_db     the same on another such session whose cached window is invalidated before
                each call (untimed RecallCache.invalidate_session, as a remember does): every
                call reads PostgreSQL, then refills the cache
  search        client.memory.search(ns, "<two words>", limit=10) in a namespace of
                --search-items items, over 50 word pairs; memory_items is ANALYZEd first
Target: recall p50 <= 2 x ping p50 (conveyor.ping: idempotent as recall is), judged for
recall_cached and recall_db separately; the ratio to ping_default is printed beside it.

Run from the repository root:  .venv/bin/python -m benchmarks.memory
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
        self.raw_conns: list[psycopg.Connection[Any]] = [conn]

    def check(self, runs: dict[str, Any], expected: int) -> None:
        bad = [r for r in runs.values() if r.status.value != "succeeded"]
        if bad:
            raise RuntimeError(f"{len(bad)} run(s) failed, e.g. {bad[0].error_message}")
        stored = sum(not i["deduped"] for r in runs.values() for i in r.output["items"])
        if stored != expected:
            raise RuntimeError(f"stored {stored} items, expected {expected}")

    def remember_batched(self, ns: str, batches: list[list[Item]]) -> float:
        mem, t0 = self.client.memory, time.perf_counter()
        ids = [mem.remember.submit(ns, f"s{b}", items=items).id for b, items in enumerate(batches)]
        runs = self.client.wait_many(ids, timeout=self.args.timeout)
        elapsed = time.perf_counter() - t0
        self.check(runs, sum(map(len, batches)))
        return elapsed

    def singles(self, ns: str, batches: list[list[Item]], at_once: bool) -> float:
        mem, t0, out = self.client.memory, time.perf_counter(), []
        for i, it in enumerate(batches[0]):
            kw = {"role": it["role"], "metadata": it["metadata"]}
            args = (ns, f"s{i % SINGLE_SESSIONS}", it["content"])
            out.append(
                mem.remember.submit(*args, **kw).id if at_once else mem.remember(*args, **kw)
            )
        runs = self.client.wait_many(out, timeout=self.args.timeout) if at_once else {}
        elapsed = time.perf_counter() - t0
        if at_once:
            self.check(runs, len(batches[0]))
        elif any(done.items[0].deduped for done in out):
            raise RuntimeError("an item was deduped")
        return elapsed

    @contextlib.contextmanager
    def raw_threads(self, url: str, threads: int) -> Iterator[None]:
        """The raw methods' connections for `threads` threads, opened outside the timing."""
        conns = [psycopg.connect(url, autocommit=True) for _ in range(threads)]
        self.raw_conns = conns
        try:
            yield
        finally:
            self.raw_conns = [self.conn]
            for conn in conns:
                conn.close()

    def raw(self, ns: str, batches: list[list[Item]], copy: bool) -> float:
        """One thread per raw connection; each takes the next batch until none is left."""
        todo = list(enumerate(batches))[::-1]

        def work(conn: psycopg.Connection[Any]) -> None:
            while True:
                try:
                    b, items = todo.pop()  # list.pop is atomic under the GIL
                except IndexError:
                    return
                rows = raw_rows(ns, f"s{b}", items)
                with conn.transaction(), conn.cursor() as cur:
                    if copy:
                        with cur.copy(COPY_SQL) as out:
                            for row in rows:
                                out.write_row(row)
                    else:
                        cur.executemany(INSERT_SQL, rows)

        t0 = time.perf_counter()
        if len(self.raw_conns) == 1:
            work(self.raw_conns[0])
        else:
            with ThreadPoolExecutor(len(self.raw_conns)) as pool:
                list(pool.map(work, self.raw_conns))
        return time.perf_counter() - t0

    def count(self, ns: str) -> int:
        sql = "SELECT count(*) FROM memory_items WHERE namespace = %s"
        return int(self.conn.execute(sql, (ns,)).fetchone()[0])  # type: ignore[index]


def throughput(bench: Bench, args: argparse.Namespace, tag: str = "") -> dict[str, Any]:
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
            ns = f"tp{tag}-{name}-r{r}"
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

    def pinger(agent: str) -> Callable[[int], None]:
        def ping(i: int) -> None:
            run = client.wait(client.submit(agent, {"i": i}), timeout=30.0)
            if run.status.value != "succeeded":
                raise RuntimeError(f"{agent} ended {run.status.value}: {run.error_message}")

        return ping

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
        ("ping", pinger("conveyor.ping"), None),
        ("ping_default", pinger("bench.ping"), None),
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
    default50 = stats["ping_default"]["p50"]
    return {
        "latency_ms": stats,
        "p50_over_ping": ratios,
        "p50_over_ping_default": {
            n: s["p50"] / default50 for n, s in stats.items() if not n.startswith("ping")
        },
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


def latency_concurrency(args: argparse.Namespace) -> int:
    """The memory concurrency latency is measured at: the built-in pool's, if measured."""
    from conveyor.pools import BUILTIN_POOLS

    default = BUILTIN_POOLS["memory"].concurrency
    return default if default in args.memory_concurrency else args.memory_concurrency[-1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.app import create_app
    from conveyor.client import Client
    from conveyor.config import load_settings
    from conveyor.models.migrate import upgrade

    machine = h.machine_info()
    at_latency = latency_concurrency(args)
    tps: dict[str, Any] = {}
    lat: dict[str, Any] | None = None
    with (
        h.scratch_database("mem") as db,
        h.scratch_redis(args.redis_db, args.redis_db + 1) as (broker, cache_url),
        h.Workers(args.keep_logs) as workers,
    ):
        url = h.pg_url(db, "postgresql+psycopg")
        upgrade(url)
        prefix = h.unique("mem") + "."

        def env_for(conc: int) -> tuple[dict[str, Any], dict[str, str]]:
            pools = {
                "default": {"kind": args.ping_pool, "concurrency": args.ping_concurrency},
                "memory": {"kind": "threads", "concurrency": conc},
            }
            env = h.conveyor_env(broker, url, prefix, args.ping_pool, args.ping_concurrency)
            env.update(CONVEYOR_POOLS=json.dumps(pools), CONVEYOR_CACHE_URL=cache_url)
            return pools, env

        def memory_worker(conc: int) -> h.Worker:
            argv = [h.PYTHON, "-m", "conveyor", "worker", "--pool", "memory"]
            argv += ["--concurrency", str(conc), "--loglevel", args.loglevel]
            return workers.start(f"memory-c{conc}", argv, env_for(conc)[1])

        pools, env = env_for(args.memory_concurrency[0])
        mem_worker = memory_worker(args.memory_concurrency[0])
        ping_argv = h.conveyor_worker_argv(args.ping_concurrency, args.loglevel)
        ping_worker = workers.start("default", ping_argv, env)
        settings = load_settings(
            broker_url=broker,
            database_url=url,
            queue_prefix=prefix,
            pools=pools,
            cache_url=cache_url,
            agent_modules=[h.BENCH_AGENTS],
        )
        client = Client(create_app(settings))
        recall = ("memory.recall", {"namespace": "x", "session": "x"})
        try:
            ready = {
                f"memory c={args.memory_concurrency[0]}": wait_ready(client, *recall, mem_worker),
                "default": wait_ready(client, "conveyor.ping", {"i": -1}, ping_worker),
            }
            with psycopg.connect(h.pg_url(db), autocommit=True) as conn:
                bench = Bench(client, conn, args)
                for n, conc in enumerate(args.memory_concurrency):
                    if n:
                        workers.stop(mem_worker)
                        mem_worker = memory_worker(conc)
                        ready[f"memory c={conc}"] = wait_ready(client, *recall, mem_worker)
                    print(f"[bench] throughput, memory pool threads c={conc}", file=sys.stderr)
                    with bench.raw_threads(h.pg_url(db), conc):
                        tps[str(conc)] = throughput(bench, args, f"-c{conc}") | {
                            "concurrency": conc
                        }
                    if conc == at_latency and lat is None:
                        lat = latency(bench, args, cache_url)
            for worker in (mem_worker, ping_worker):
                worker.check_alive()
        finally:
            client.close()
    keys = "rounds batches batch_size singles count warmup block recall_items search_items"
    config = {k: getattr(args, k) for k in keys.split()} | {
        "memory_pool": [f"threads c={c}" for c in args.memory_concurrency],
        "raw_threads": "as many as the memory pool's threads, one connection each",
        "latency_memory_pool": f"threads c={at_latency}",
        "ping_pool": f"{args.ping_pool} c={args.ping_concurrency}",
        "loglevel": args.loglevel,
    }
    head = {"benchmark": "memory", "machine": machine, "config": config, "ready_after_s": ready}
    return head | {"throughput": tps, "latency": lat}


def report(result: dict[str, Any]) -> None:
    lat, cfg = result["latency"], result["config"]
    for conc, tp in result["throughput"].items():
        rates = tp["rates"]
        rows = [
            [m, r["items"], r["seconds"], r["rate"], r["rate"] / rates["raw_copy"]["rate"],
             r["rate"] / rates["raw_executemany"]["rate"]]
            for m, r in rates.items()
        ]  # fmt: skip
        h.print_table(
            f"Remember throughput, items/s ({cfg['rounds']} rounds, batch {cfg['batch_size']}, "
            f"memory pool threads c={conc}, raw: {conc} thread(s) x 1 connection, load "
            f"{result['machine']['loadavg_at_start']}, {result['machine']['date']})",
            ["method", "items", "seconds", "items/s", "/ raw_copy", "/ raw_executemany"],
            rows,
        )
        for raw, ratio in tp["batched_over_raw"].items():
            print(f"  remember_batched / {raw} = {ratio:.2f}")
        print(
            f"verdict: remember_batched / {tp['faster_raw']} (the faster raw) = "
            f"{tp['batched_over_raw'][tp['faster_raw']]:.2f} [memory pool threads c={conc}, "
            f"raw {conc} thread(s) x 1 connection, batches of {cfg['batch_size']}] "
            f"(target >= {TARGET_RATE}: {'MET' if tp['target_met'] else 'MISSED'})"
        )
    stats, cached = lat["latency_ms"], lat["cached_fraction"]
    notes = {n: f"cached {100 * f:.0f}%" for n, f in cached.items()}
    notes["search"] = f"{lat['search_hits_mean']:.1f} hits"
    rows = [
        [n, s["n"], s["p50"], s["p90"], s["p99"], s["mean"], s["max"],
         lat["p50_over_ping"].get(n, 1.0), lat["p50_over_ping_default"].get(n),
         lat["p99_over_ping"][n], notes.get(n, "")]
        for n, s in stats.items()
    ]  # fmt: skip
    h.print_table(
        f"Latency, ms (ping on {cfg['ping_pool']}, memory pool {cfg['latency_memory_pool']}; "
        f"table {lat['rows']['table']} rows, search namespace {lat['rows']['search_namespace']})",
        ["side", "n", "p50", "p90", "p99", "mean", "max", "p50/ping", "p50/ping_default",
         "p99/ping", ""],
        rows,
    )  # fmt: skip
    terms = (
        f"conveyor.ping (idempotent) on {cfg['ping_pool']}, memory pool "
        f"{cfg['latency_memory_pool']}, N={cfg['count']} sequential"
    )
    for name, met in lat["target_met"].items():
        print(
            f"verdict: {name} p50 / ping p50 = {lat['p50_over_ping'][name]:.2f} "
            f"(/ ping_default {lat['p50_over_ping_default'][name]:.2f}) [{terms}] "
            f"(target <= {TARGET_RECALL}: {'MET' if met else 'MISSED'})"
        )
    print(f"info: search p50 / ping p50 = {lat['p50_over_ping']['search']:.2f} (no target)")
    print(
        f"info: ping_default (bench.ping, claimed) p50 / ping p50 = "
        f"{lat['p50_over_ping']['ping_default']:.2f}"
    )


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
    add(
        "--memory-concurrency",
        type=int,
        nargs="+",
        default=[1, 4],
        help="memory pool threads, one throughput measurement each; the raw methods use as "
        "many threads and connections (1 4: 4 is the built-in memory pool's)",
    )
    add(
        "--ping-pool",
        choices=["prefork", "threads", "solo"],
        default="prefork",
        help="default pool kind for the pings (prefork: the shipped default pool)",
    )
    add("--ping-concurrency", type=int, default=2, help="default pool concurrency (2)")
    add("--redis-db", type=int, default=8, help="broker db; +1 is the cache (both flushed!) (8)")
    add("--timeout", type=float, default=600.0, help="seconds to wait for a batch of runs")
    add("--seed", type=int, default=1, help="text generator seed (1)")
    h.add_common_args(parser, raw_celery=False)
    return h.run_main(parser, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
