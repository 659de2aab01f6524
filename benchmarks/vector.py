"""Vector search: recall and QPS versus raw faiss, single-query latency versus ping, snapshots.

One invocation: a scratch database, Redis db --redis-db as broker and --redis-db + 1 as the
embedding cache (CONVEYOR_CACHE_URL), a temporary CONVEYOR_DATA_DIR, and two worker
subprocesses: `conveyor worker --pool vector` (prefork, --vector-concurrency, default 1; faiss
gets cpu_count // concurrency threads) and `--pool default` (--ping-pool, default prefork c=2,
the shipped default pool) for conveyor.ping and bench.ping.

Data, --count 384-dim float32 vectors per set, L2-normalised, loaded through Celery with
client.vector.upsert.submit in batches of --batch-size (--inflight runs in flight) into HNSW
collections (cosine); the first vector.stats afterwards builds the worker's replica:
  A  synthetic: --centres Gaussian centres (seeded), points = centre + --spread noise;
     queries: --queries held-out points drawn from the same centres
  B  the docstrings of the standard library (modules, classes, functions, methods; gathered
     in a subprocess, deduplicated, at most --count) embedded with HashingEmbedder, stored
     with their text; queries: the first sentences of --queries of those docstrings
Recall@k and QPS are measured once per --batch size (queries per search task; default both
100, this benchmark's default batch, and 1000, what the verdicts before issue 17 used):
Recall@k: conveyor's answers (client.vector.search, --queries in batches of --batch) against
exact search (numpy, same vectors); "ties" also counts a hit whose exact score equals the k-th.
QPS, --rounds rounds, method order rotating, all --queries in batches of --batch each time
(each side's answers as its API gives them: SearchResult ids, faiss label arrays; turning
them into row numbers for recall is not timed, on either side):
  conveyor_seq   one client.vector.search(name, batch, k, include=()) after another
                 (submit + wait; ids and scores, like raw faiss)
  conveyor_pipe  all batches submitted with search.submit(..., include=()), then wait_many
  conveyor_meta  as conveyor_pipe with the default include (metadata and text of every hit,
                 read from PostgreSQL); reported, not judged
  raw_faiss      faiss.IndexHNSWFlat(384, 32, IP), efConstruction 80, built in this process
                 on the same vectors; search(batch, k) with efSearch = max(192, 8k) as the replica
Target: recall@10 >= 0.95 at conveyor QPS >= 70 % of raw faiss (judged per set, both modes,
each batch size).
Latency, ms: --count-latency sequential single-vector searches (include=()) on A versus
conveyor.ping round trips (idempotent, as vector.search is) and bench.ping round trips
(benchmarks/agents.py: a default agent, claimed before it runs), after --warmup, interleaved
in blocks of --block.
Target: p50 <= 2 x ping p50 (conveyor.ping); the ratio to bench.ping is printed beside it.
Snapshot: client.vector.snapshot(A), then load_snapshot(root, A, generation) in this process,
--loads times. Target: load <= 1 s (the median).

--count defaults to 20000 (~1.5 min a run); 100000 takes ~4 min.
Run from the repository root:  .venv/bin/python -m benchmarks.vector [--count 100000]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks import _harness as h
from benchmarks.memory import wait_ready

F32 = npt.NDArray[np.float32]
DIM = 384
TARGET_RECALL, TARGET_QPS, TARGET_P50, TARGET_LOAD_S = 0.95, 0.7, 2.0, 1.0
SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "ensurepip"}
SKIP |= {"venv", "pydoc_data", "lib2to3", "xxsubtype", "__main__", "__phello__", "pty", "tty"}
QPS_METHODS = ["conveyor_seq", "conveyor_pipe", "conveyor_meta", "raw_faiss"]
JUDGED = ("conveyor_seq", "conveyor_pipe")


def dump_docstrings(out: str) -> None:
    """In a throw-away subprocess: import the standard library, write its docstrings as JSON."""
    import contextlib
    import importlib
    import inspect
    import io
    import pkgutil
    import warnings

    warnings.simplefilter("ignore")
    mods: list[Any] = []
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        for name in sorted(sys.stdlib_module_names):
            if name in SKIP or name.startswith(("_", "turtle")):
                continue
            try:
                mods.append(importlib.import_module(name))
                subs = pkgutil.walk_packages(mods[-1].__path__, name + ".", onerror=lambda _: None)
            except (Exception, SystemExit, AttributeError):
                continue
            for info in list(subs) if hasattr(mods[-1], "__path__") else []:
                if any(p in SKIP or p.startswith("test") for p in info.name.split(".")):
                    continue
                with contextlib.suppress(Exception, SystemExit):
                    mods.append(importlib.import_module(info.name))
    docs: dict[str, None] = {}

    def add(obj: Any) -> None:
        doc = inspect.getdoc(obj)
        if doc and len(doc.strip()) >= 20:
            docs.setdefault(doc.strip(), None)

    for mod in mods:
        add(mod)
        for _, obj in inspect.getmembers(mod):
            if getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isclass(obj):
                add(obj)
                for _, member in inspect.getmembers(obj):
                    if inspect.isroutine(member):
                        add(member)
            elif inspect.isroutine(obj):
                add(obj)
    Path(out).write_text(json.dumps({"modules": len(mods), "docs": list(docs)}))


def docstrings() -> tuple[int, list[str]]:
    data = h.dumped_json("benchmarks.vector", "dump_docstrings", timeout=600)
    return int(data["modules"]), list(data["docs"])


def normalise(x: npt.NDArray[Any]) -> F32:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: F32 = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return out


def make_sets(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from conveyor.vector.embedders import HashingEmbedder

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.centres, DIM))
    labels = rng.integers(0, args.centres, args.count + args.queries)
    points = centres[labels] + args.spread * rng.standard_normal((len(labels), DIM))
    a = normalise(points)
    t0 = time.perf_counter()
    modules, docs = docstrings()
    found = len(docs)
    order = rng.permutation(found)
    docs = [docs[i] for i in order[: args.count]]
    first = [re.split(r"(?<=[.!?])\s|\n\n", d, maxsplit=1)[0] for d in docs]
    picks = [i for i in rng.permutation(len(docs)) if re.search(r"\w", first[i])][: args.queries]
    embedder = HashingEmbedder(DIM)
    b, bq = embedder.embed(docs), embedder.embed([first[i] for i in picks])
    seconds = time.perf_counter() - t0
    print(f"[bench] corpus B: {found} docstrings from {modules} modules", file=sys.stderr)
    return {
        "A": {"data": a[: args.count], "queries": a[args.count :], "texts": None,
              "meta": [{"c": int(c)} for c in labels[: args.count]],
              "about": f"synthetic, {args.centres} centres, spread {args.spread}"},
        "B": {"data": b, "queries": bq, "texts": docs, "meta": [{} for _ in docs],
              "about": f"stdlib docstrings ({found} found in {modules} modules, "
                       f"gathered + embedded in {seconds:.1f}s)", "found": found},
    }  # fmt: skip


def exact(data: F32, queries: F32, k: int) -> tuple[npt.NDArray[np.int64], F32]:
    """Exact top-k ids and the k-th score per query (inner product of normalised vectors)."""
    ids, kth = [], []
    for i in range(0, len(queries), 100):
        scores = queries[i : i + 100] @ data.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        ids.append(top)
        kth.append(np.take_along_axis(scores, top, axis=1).min(axis=1))
    return np.vstack(ids), np.concatenate(kth).astype(np.float32)


def recall(found: list[list[int]], truth: Any, data: F32, queries: F32, k: int) -> dict[str, float]:
    ids, kth = truth
    strict = ties = 0.0
    for q, row in enumerate(found):
        strict += len(set(row) & set(ids[q].tolist())) / k
        scores = data[row] @ queries[q] if row else np.zeros(0)
        ties += min(k, int((scores >= kth[q] - 1e-5).sum())) / k
    return {"recall": strict / len(found), "recall_ties": ties / len(found)}


class Bench:
    def __init__(self, client: Any, api: Any, args: argparse.Namespace) -> None:
        self.client, self.api, self.args = client, api, args

    def load(self, name: str, s: dict[str, Any]) -> dict[str, Any]:
        data, size, pending, t0 = s["data"], self.args.batch_size, [], time.perf_counter()
        for start in range(0, len(data), size):
            items = [
                {"id": f"{name}{i}", "vector": data[i].tolist(), "metadata": s["meta"][i]}
                | ({"text": s["texts"][i]} if s["texts"] else {})
                for i in range(start, min(start + size, len(data)))
            ]
            pending.append(self.api.upsert.submit(name, items).id)
            while len(pending) >= self.args.inflight:
                self.client.result(pending.pop(0), timeout=self.args.timeout)
        for run_id in pending:
            self.client.result(run_id, timeout=self.args.timeout)
        load = time.perf_counter() - t0
        t1 = time.perf_counter()
        stats = self.api.stats(name)
        build = time.perf_counter() - t1
        if (stats.replica_kind, stats.replica_vectors) != ("hnsw", len(data)):
            raise RuntimeError(f"{name}: replica is {stats.replica_kind} {stats.replica_vectors}")
        return {"vectors": len(data), "seconds": load, "rate": len(data) / load,
                "replica_build_s": build}  # fmt: skip

    @staticmethod
    def batches(queries: F32, b: int) -> list[F32]:
        """The same numpy batches raw faiss gets (Client.vector sends each as one matrix)."""
        return [queries[i : i + b] for i in range(0, len(queries), b)]

    def seq(self, name: str, batches: list[Any]) -> list[list[list[str]]]:
        return [self.api.search(name, b, k=self.args.k, include=()).ids for b in batches]

    def pipe(self, name: str, batches: list[Any], include: Any = ()) -> list[list[list[str]]]:
        ids = [self.api.search.submit(name, b, k=self.args.k, include=include).id for b in batches]
        runs = self.client.wait_many(ids, timeout=self.args.timeout)
        if any(runs[i].status.value != "succeeded" for i in ids):
            raise RuntimeError("a search run failed")
        return [runs[i].output["ids"] for i in ids]


def conveyor_rows(found: list[list[list[str]]]) -> list[list[int]]:
    """Per query, the row numbers of the ids conveyor returned ("B123" -> 123)."""
    return [[int(x[1:]) for x in row] for batch in found for row in batch]


def faiss_rows(found: list[Any]) -> list[list[int]]:
    """Per query, the labels raw faiss returned (its labels are the row numbers)."""
    return [[int(x) for x in row if x >= 0] for labels in found for row in labels]


def raw_faiss(data: F32, k: int) -> tuple[Any, Any, float]:
    from conveyor.vector.replica import default_ef_search, load_faiss

    faiss, t0 = load_faiss(), time.perf_counter()
    index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(data)
    params = faiss.SearchParametersHNSW(efSearch=default_ef_search(k))
    return index, params, time.perf_counter() - t0


def quality(bench: Bench, name: str, s: dict[str, Any], args: argparse.Namespace) -> Any:
    data, queries, k = s["data"], s["queries"], args.k
    index, params, built = raw_faiss(data, k)
    truth = exact(data, queries, k)
    out: dict[str, Any] = {"queries": len(queries), "raw_build_s": built, "by_batch": {}}
    for batch in args.batch:
        print(f"[bench] {name}: QPS with batches of {batch}", file=sys.stderr)
        out["by_batch"][str(batch)] = qps_rounds(
            bench, name, data, queries, (index, params, truth), batch, args
        )
    return out


def qps_rounds(
    bench: Bench,
    name: str,
    data: F32,
    queries: F32,
    prepared: tuple[Any, Any, Any],
    batch: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    index, params, truth = prepared
    k = args.k
    conv_batches = bench.batches(queries, batch)

    def raw() -> list[Any]:
        return [index.search(b, k, params=params)[1] for b in conv_batches]

    methods: dict[str, Callable[[], list[Any]]] = {
        "conveyor_seq": lambda: bench.seq(name, conv_batches),
        "conveyor_pipe": lambda: bench.pipe(name, conv_batches),
        "conveyor_meta": lambda: bench.pipe(name, conv_batches, ("metadata", "text")),
        "raw_faiss": raw,
    }
    for call in methods.values():  # warm-up, untimed
        call()
    seconds = dict.fromkeys(methods, 0.0)
    found: dict[str, list[list[int]]] = {}
    for r in range(args.rounds):
        for m in QPS_METHODS[r % 4 :] + QPS_METHODS[: r % 4]:
            t0 = time.perf_counter()
            answers = methods[m]()
            seconds[m] += time.perf_counter() - t0
            found[m] = faiss_rows(answers) if m == "raw_faiss" else conveyor_rows(answers)
    n = len(queries) * args.rounds
    qps = {m: n / s for m, s in seconds.items()}
    rec = {m: recall(f, truth, data, queries, k) for m, f in found.items()}
    ratio = {m: qps[m] / qps["raw_faiss"] for m in QPS_METHODS if m != "raw_faiss"}
    met = {m: rec[m]["recall"] >= TARGET_RECALL and ratio[m] >= TARGET_QPS for m in JUDGED}
    return {"batch": batch, "tasks": len(conv_batches), "qps": qps, "recall": rec,
            "qps_over_raw": ratio, "target_met": met}  # fmt: skip


def latency(bench: Bench, name: str, queries: F32, args: argparse.Namespace) -> dict[str, Any]:
    client, api, vecs = bench.client, bench.api, [queries[i : i + 1] for i in range(len(queries))]

    def pinger(agent: str) -> Callable[[int], None]:
        def ping(i: int) -> None:
            if client.wait(client.submit(agent, {"i": i})).status.value != "succeeded":
                raise RuntimeError(f"{agent} failed")

        return ping

    def search(i: int) -> None:
        if len(api.search(name, vecs[i % len(vecs)], k=args.k, include=()).ids[0]) != args.k:
            raise RuntimeError("search returned fewer than k matches")

    sides = [
        ("ping", pinger("conveyor.ping")),
        ("ping_default", pinger("bench.ping")),
        ("search", search),
    ]
    samples: dict[str, list[float]] = {side: [] for side, _ in sides}
    for _, call in sides:
        for i in range(args.warmup):
            call(i)
    done, rotation = 0, 0
    while done < args.count_latency:
        size = min(args.block, args.count_latency - done)
        for side, call in sides[rotation % len(sides) :] + sides[: rotation % len(sides)]:
            for i in range(done, done + size):
                t0 = time.perf_counter()
                call(i)
                samples[side].append((time.perf_counter() - t0) * 1000.0)
        done, rotation = done + size, rotation + 1
    stats = {side: h.percentiles(v) for side, v in samples.items()}
    ratio = stats["search"]["p50"] / stats["ping"]["p50"]
    return {
        "latency_ms": stats,
        "p50_over_ping": ratio,
        "p50_over_ping_default": stats["search"]["p50"] / stats["ping_default"]["p50"],
        "ping_default_over_ping": stats["ping_default"]["p50"] / stats["ping"]["p50"],
        "target_met": ratio <= TARGET_P50,
    }


def snapshot(bench: Bench, name: str, root: Path, n: int, loads: int) -> dict[str, Any]:
    from conveyor.vector.snapshot import load_snapshot

    snap = bench.api.snapshot(name)
    manifest = json.loads(Path(snap.path).with_suffix(".json").read_text())
    times = []
    for _ in range(loads):
        t0 = time.perf_counter()
        replica = load_snapshot(root, name, manifest["generation"])
        times.append(time.perf_counter() - t0)
        if replica is None or replica.size != n or replica.built != "hnsw":
            raise RuntimeError(f"snapshot of {name} did not load as {n} hnsw vectors")
        del replica
    median = statistics.median(times)
    return {"write_s": snap.seconds, "bytes": snap.bytes, "vectors": snap.vectors,
            "load_s": times, "load_min_s": min(times), "load_median_s": median,
            "target_met": median <= TARGET_LOAD_S}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.app import create_app
    from conveyor.client import Client
    from conveyor.config import load_settings
    from conveyor.models.migrate import upgrade
    from conveyor.vector.api import VectorAPI

    machine = h.machine_info()
    sets = make_sets(args)
    data_dir = Path(tempfile.mkdtemp(prefix="conveyor-bench-vec-"))
    try:
        with (
            h.scratch_database("vec") as db,
            h.scratch_redis(args.redis_db, args.redis_db + 1) as (broker, cache_url),
            h.Workers(args.keep_logs) as workers,
        ):
            url = h.pg_url(db, "postgresql+psycopg")
            upgrade(url)
            prefix = h.unique("vec") + "."
            pools = {
                "default": {"kind": args.ping_pool, "concurrency": 2},
                "vector": {"kind": "prefork", "concurrency": args.vector_concurrency},
            }
            env = h.conveyor_env(broker, url, prefix, args.ping_pool, 2)
            env.update(CONVEYOR_POOLS=json.dumps(pools), CONVEYOR_CACHE_URL=cache_url)
            env.update(CONVEYOR_DATA_DIR=str(data_dir))
            vec_argv = [h.PYTHON, "-m", "conveyor", "worker", "--pool", "vector"]
            vec_worker = workers.start("vector", [*vec_argv, "--loglevel", args.loglevel], env)
            ping_worker = workers.start("default", h.conveyor_worker_argv(2, args.loglevel), env)
            settings = load_settings(
                broker_url=broker, database_url=url, queue_prefix=prefix, pools=pools,
                cache_url=cache_url, agent_modules=[h.BENCH_AGENTS],
            )  # fmt: skip
            client = Client(create_app(settings))
            try:
                create = {"name": "A", "dim": DIM, "metric": "cosine", "index": "hnsw"}
                ready = {
                    "vector": wait_ready(client, "vector.create_collection", create, vec_worker),
                    "default": wait_ready(client, "conveyor.ping", {"i": -1}, ping_worker),
                }
                api = VectorAPI(client, timeout=args.timeout)
                api.create_collection("B", dim=DIM, metric="cosine", index="hnsw")
                bench, out = Bench(client, api, args), {}
                for name, s in sets.items():
                    print(f"[bench] loading {name} ({len(s['data'])})", file=sys.stderr)
                    out[name] = {"about": s["about"], "load": bench.load(name, s)}
                for name, s in sets.items():
                    print(f"[bench] recall and QPS on {name}", file=sys.stderr)
                    out[name]["search"] = quality(bench, name, s, args)
                print("[bench] latency, snapshot", file=sys.stderr)
                lat = latency(bench, "A", sets["A"]["queries"], args)
                snap = snapshot(bench, "A", data_dir / "vector", args.count, args.loads)
                for worker in (vec_worker, ping_worker):
                    worker.check_alive()
            finally:
                client.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    keys = "count queries batch k rounds batch_size inflight count_latency warmup block loads"
    config = {k: getattr(args, k) for k in keys.split()} | {
        "vectors": {name: len(s["data"]) for name, s in sets.items()},
        "vector_pool": f"prefork c={args.vector_concurrency}",
        "ping_pool": f"{args.ping_pool} c=2",
        "loglevel": args.loglevel,
    }
    head = {"benchmark": "vector", "machine": machine, "config": config, "ready_after_s": ready}
    return head | {"sets": out, "latency": lat, "snapshot": snap}


def report(result: dict[str, Any]) -> None:
    sets, cfg, lat, snap = result["sets"], result["config"], result["latency"], result["snapshot"]
    machine = result["machine"]
    rows = [
        [n, s["about"], s["load"]["vectors"], s["load"]["seconds"], s["load"]["rate"],
         s["load"]["replica_build_s"], s["search"]["raw_build_s"]]
        for n, s in sets.items()
    ]  # fmt: skip
    h.print_table(
        f"Load through Celery (upsert batches of {cfg['batch_size']}, {cfg['inflight']} in "
        f"flight, vector pool {cfg['vector_pool']}, load {machine['loadavg_at_start']}, "
        f"{machine['date']})",
        ["set", "data", "vectors", "seconds", "vectors/s", "replica build s", "raw faiss build s"],
        rows,
    )
    rows = []
    for n, s in sets.items():
        for batch, q in s["search"]["by_batch"].items():
            for m in QPS_METHODS:
                r = q["recall"][m]
                rows.append([n, batch, m, q["qps"][m], q["qps_over_raw"].get(m, 1.0),
                             r["recall"], r["recall_ties"]])  # fmt: skip
    h.print_table(
        f"Search, k={cfg['k']}, {cfg['queries']} queries, {cfg['rounds']} rounds",
        ["set", "batch", "method", "QPS", "/ raw", f"recall@{cfg['k']}", "recall (ties)"],
        rows,
    )
    for n, s in sets.items():
        for batch, q in s["search"]["by_batch"].items():
            for m, met in q["target_met"].items():
                print(
                    f"verdict {n} {m}: recall {q['recall'][m]['recall']:.3f}, QPS / raw "
                    f"{q['qps_over_raw'][m]:.2f} [batch {batch} queries per task, "
                    f"{cfg['queries']} queries, vector pool {cfg['vector_pool']}, "
                    f"{cfg['vectors'][n]} vectors] (target recall >= {TARGET_RECALL} and "
                    f">= {TARGET_QPS}: {'MET' if met else 'MISSED'})"
                )
    stats = lat["latency_ms"]
    cols = ["n", "p50", "p90", "p99", "mean", "max"]
    rows = [[n, *(s[c] for c in cols)] for n, s in stats.items()]
    title = f"Latency, ms (single-vector search on A vs pings on {cfg['ping_pool']})"
    h.print_table(title, ["side", *cols], rows)
    print(
        f"verdict: search p50 / ping p50 = {lat['p50_over_ping']:.2f} (/ ping_default "
        f"{lat['p50_over_ping_default']:.2f}) [conveyor.ping (idempotent) on "
        f"{cfg['ping_pool']}, vector pool {cfg['vector_pool']}, N={cfg['count_latency']}] "
        f"(target <= {TARGET_P50}: {'MET' if lat['target_met'] else 'MISSED'})"
    )
    print(
        f"info: ping_default (bench.ping, claimed) p50 / ping p50 = "
        f"{lat['ping_default_over_ping']:.2f}"
    )
    loads = ", ".join(f"{t:.3f}" for t in snap["load_s"])
    print(f"\nSnapshot of A: {snap['vectors']} vectors, {snap['bytes'] / 1e6:.1f} MB, written in "
          f"{snap['write_s']:.2f}s; load_snapshot: {loads} s")  # fmt: skip
    print(
        f"verdict: snapshot load median {snap['load_median_s']:.3f}s, min "
        f"{snap['load_min_s']:.3f}s [{snap['vectors']} HNSW vectors] (target <= "
        f"{TARGET_LOAD_S}s: {'MET' if snap['target_met'] else 'MISSED'})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--count", type=int, default=20_000, help="vectors per set, B: at most the corpus (20000)")
    add("--queries", type=int, default=1000, help="queries per set (1000)")
    add(
        "--batch",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="queries per search task, one QPS measurement per size (100 1000: the "
        "default batch and the large one earlier verdicts used)",
    )
    add("-k", type=int, default=10, help="neighbours per query (10)")
    add("--rounds", type=int, default=8, help="timed QPS rounds, order rotating (8)")
    add("--batch-size", type=int, default=5000, help="items per upsert task (5000)")
    add("--inflight", type=int, default=2, help="upsert runs in flight while loading (2)")
    add("--centres", type=int, default=1000, help="set A: Gaussian centres (1000)")
    add("--spread", type=float, default=0.5, help="set A: noise sd per dim, centres sd 1")
    add("--count-latency", type=int, default=200, help="timed single searches and pings (200)")
    add("--warmup", type=int, default=20, help="untimed latency calls per side (20)")
    add("--block", type=int, default=25, help="latency interleaving block size (25)")
    add("--loads", type=int, default=3, help="snapshot loads timed (3)")
    add("--vector-concurrency", type=int, default=1, help="vector pool (prefork) processes (1)")
    add(
        "--ping-pool",
        choices=["prefork", "threads", "solo"],
        default="prefork",
        help="default pool kind for the pings (prefork: the shipped default pool)",
    )
    add("--redis-db", type=int, default=5, help="broker db; +1 is the cache (both flushed!) (5)")
    add("--timeout", type=float, default=900.0, help="seconds to wait for one run (900)")
    add("--seed", type=int, default=1, help="data seed (1)")
    h.add_common_args(parser, raw_celery=False)
    return h.run_main(parser, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
