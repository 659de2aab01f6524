"""IVF recall@k against exact (flat) search on third-party docstrings, per size and nprobe.

Corpus: the docstrings of third-party packages installed beside conveyor (--packages; not
the standard library, which benchmarks/vector.py uses): modules, classes, functions and
methods, gathered in a throw-away subprocess, at least 20 characters, deduplicated, then
shuffled (--seed) and embedded with conveyor's default embedder (hashing, 384 dimensions).
A size above the corpus is filled with chunks: contiguous windows of 8 to 64 words of
random docstrings (seeded, deduplicated against everything before), embedded the same way,
as a corpus chunked for retrieval would be.

For each --sizes n (default 1024, 2000, 5000, 20000, 100000: from IVF_MIN_TRAIN, the
smallest an `ivf` collection indexes, up): the first n documents go into a conveyor Replica
of kind `ivf` (sqrt(n) lists, trained as a worker trains them) and one of kind `flat`, the
exact answer. Queries: the first sentences of --queries docstrings among those n.
  recall     for each nprobe of the sweep (nlist/16, 2 nlist/16, ..., nlist, and both
             rules): Replica.search(queries, k, nprobe=p) against the flat replica's top k;
             strict (the same ids) and counting ties (a hit scoring within 1e-5 of the k-th
             exact score: hashing embeddings tie often)
  QPS        --rounds rounds, order rotating, all queries in batches of --batch: the ivf
             replica with the old rule (nlist // 8) and with the new (default_nprobe), raw
             faiss IndexIVFFlat (same vectors, same training, same nlist) with the same nprobe,
             and the flat replica (exact); reported as replica / raw faiss and ivf / flat
  grown      recall of both rules on an ivf replica that got the first m of the n vectors
             in one batch and the rest in another, m the fewest it can be trained on and
             not be retrained at n (IVF_REGROW): fewer lists, trained on fewer vectors
Target: strict recall@k >= 0.95 at every size with the new default, fresh and grown.

Run from the repository root:  .venv/bin/python -m benchmarks.ivf_recall [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks import _harness as h

F32 = npt.NDArray[np.float32]
TARGET_RECALL = 0.95
PACKAGES = (
    "numpy sqlalchemy celery kombu pydantic faiss redis alembic click tornado hypothesis "
    "pygments rich prompt_toolkit _pytest mako yaml dateutil jsonschema psycopg amqp billiard "
    "flower prometheus_client cryptography attr markdown_it pytz packaging vine referencing "
    "pydantic_settings sortedcontainers humanize"
)
SKIP_PARTS = ("test", "tests", "testing", "conftest", "__main__")


def old_nprobe(nlist: int, k: int) -> int:
    """The rule before issue 16: an eighth of the lists."""
    return max(1, nlist // 8)


def dump_docstrings(out: str, packages: list[str]) -> None:
    """In a throw-away subprocess: import the packages, write their docstrings as JSON."""
    import contextlib
    import importlib
    import inspect
    import io
    import pkgutil
    import warnings

    warnings.simplefilter("ignore")
    sink, per = io.StringIO(), {}
    seen: dict[str, None] = {}

    def members(obj: Any) -> list[tuple[str, Any]]:
        try:
            return inspect.getmembers(obj)
        except BaseException:
            return []

    def add(obj: Any) -> None:
        with contextlib.suppress(Exception):
            doc = inspect.getdoc(obj)
            if doc and len(doc.strip()) >= 20:
                seen.setdefault(doc.strip(), None)

    for package in packages:
        mods, before = [], len(seen)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            try:
                mods.append(importlib.import_module(package))
            except BaseException:
                continue
            path = getattr(mods[0], "__path__", [])
            for info in pkgutil.walk_packages(path, package + ".", onerror=lambda _: None):
                if any(p.startswith(SKIP_PARTS) for p in info.name.split(".")):
                    continue
                with contextlib.suppress(BaseException):
                    mods.append(importlib.import_module(info.name))
        for mod in mods:
            add(mod)
            for _, obj in members(mod):
                if getattr(obj, "__module__", None) != mod.__name__:
                    continue
                add(obj)
                if inspect.isclass(obj):
                    for _, member in members(obj):
                        if inspect.isroutine(member):
                            add(member)
        per[package] = {"modules": len(mods), "docstrings": len(seen) - before}
    Path(out).write_text(json.dumps({"packages": per, "docs": list(seen)}))


def docstrings(packages: list[str]) -> tuple[dict[str, Any], list[str]]:
    data = h.dumped_json("benchmarks.ivf_recall", "dump_docstrings", packages)
    return data["packages"], list(data["docs"])


def chunks(docs: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """`count` new texts: contiguous windows of 8 to 64 words of random docstrings."""
    words = [d.split() for d in docs]
    seen, out = set(docs), []
    while len(out) < count:
        doc = words[int(rng.integers(len(words)))]
        size = int(rng.integers(8, 65))
        start = int(rng.integers(max(1, len(doc) - size + 1)))
        text = " ".join(doc[start : start + size])
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def first_sentence(doc: str) -> str:
    return re.split(r"(?<=[.!?])\s|\n\n", doc, maxsplit=1)[0]


def replica(kind: str, data: F32, first: int | None = None) -> Any:
    """A Replica of the vectors, applied as one batch (or as `first` of them, then the rest)."""
    from conveyor.vector.replica import Replica
    from conveyor.vector.store import Change

    built = Replica("bench", data.shape[1], "cosine", kind)
    rows = np.ascontiguousarray(data, dtype="<f4")
    changes = [Change(id=str(i), seq=i + 1, vector=rows[i].tobytes()) for i in range(len(rows))]
    for batch in (changes[:first], changes[first:]) if first else (changes,):
        built.apply(batch)
    if built.built != kind:
        raise RuntimeError(f"replica of {len(data)} vectors built {built.built}, not {kind}")
    return built


def lists(built: Any) -> int:
    from conveyor.vector.replica import load_faiss

    return int(load_faiss().extract_index_ivf(built.index.index).nlist)


def grown(n: int, data: F32, queries: F32, exact: Any, k: int) -> dict[str, Any] | None:
    """Recall of an ivf replica trained on as few of the n vectors as conveyor allows before
    it retrains (IVF_REGROW): fewer, larger lists than a fresh one. None when that is n."""
    from conveyor.vector.replica import IVF_MIN_TRAIN, IVF_REGROW, default_nprobe, ivf_lists

    nlist = max(ivf_lists(IVF_MIN_TRAIN), int(np.sqrt(n / IVF_REGROW)) + 1)
    first = max(IVF_MIN_TRAIN, nlist * nlist)
    if first >= n:
        return None
    ivf = replica("ivf", data, first)
    found = lists(ivf)
    if found != nlist:
        raise RuntimeError(f"{n} vectors grown from {first}: {found} lists, not {nlist}")
    rules = {"old": old_nprobe(nlist, k), "new": default_nprobe(nlist, k)}
    return {"trained_on": first, "nlist": nlist} | {
        rule: {"nprobe": p, "recall": recall(ivf.search(queries, k, nprobe=p).labels, exact,
                                              data, queries, k)[0]}
        for rule, p in rules.items()
    }  # fmt: skip


def raw_ivf(data: F32, nlist: int) -> Any:
    from conveyor.vector.replica import load_faiss

    faiss = load_faiss()
    index = faiss.IndexIVFFlat(faiss.IndexFlat(data.shape[1], faiss.METRIC_INNER_PRODUCT),
                               data.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)  # fmt: skip
    index.train(data)
    index.add(data)
    return index


def recall(labels: Any, exact: Any, data: F32, queries: F32, k: int) -> tuple[float, float]:
    """(strict, counting ties) recall of replica labels (seqs) against the exact Hits."""
    strict = ties = 0.0
    kth = exact.scores[:, k - 1]
    for q, row in enumerate(labels):
        got = row[row >= 0] - 1
        strict += len(set(got.tolist()) & set((exact.labels[q] - 1).tolist())) / k
        ties += min(k, int((data[got] @ queries[q] >= kth[q] - 1e-5).sum())) / k
    return strict / len(labels), ties / len(labels)


def measure(n: int, data: F32, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.vector.replica import default_nprobe, ivf_lists

    rng = np.random.default_rng(args.seed + n)
    first = [first_sentence(t) for t in texts]
    picks = [i for i in rng.permutation(len(texts)) if re.search(r"\w", first[i])]
    queries = embed([first[i] for i in picks[: args.queries]])
    k, nlist, t0 = args.k, ivf_lists(n), time.perf_counter()
    flat, ivf = replica("flat", data), replica("ivf", data)
    built = time.perf_counter() - t0
    if lists(ivf) != nlist:
        raise RuntimeError(f"{n} vectors: {lists(ivf)} lists, not {nlist}")
    exact = flat.search(queries, k)
    rules = {"old": old_nprobe(nlist, k), "new": default_nprobe(nlist, k)}
    sweep = sorted({max(1, -(-nlist * i // 16)) for i in range(1, 17)} | set(rules.values()))
    curve = {}
    for p in sweep:
        curve[p] = recall(ivf.search(queries, k, nprobe=p).labels, exact, data, queries, k)
    raw = raw_ivf(data, nlist)
    batches = [queries[i : i + args.batch] for i in range(0, len(queries), args.batch)]

    def raw_search(p: int) -> Callable[[], None]:
        def run() -> None:
            raw.nprobe = p
            for b in batches:
                raw.search(b, k)

        return run

    def conveyor_search(index: Any, p: int | None) -> Callable[[], None]:
        def run() -> None:
            for b in batches:
                index.search(b, k, nprobe=p)

        return run

    methods = {"flat": conveyor_search(flat, None)}
    for rule, p in rules.items():
        methods[f"ivf_{rule}"] = conveyor_search(ivf, p)
        methods[f"raw_{rule}"] = raw_search(p)
    qps = timed(methods, len(queries), args.rounds)
    enough = [p for p in sweep if curve[p][0] >= TARGET_RECALL]
    worst = grown(n, data, queries, exact, k)
    return {
        "vectors": n, "nlist": nlist, "queries": len(queries), "build_s": built,
        "recall": {str(p): {"recall": r, "recall_ties": t} for p, (r, t) in curve.items()},
        "min_nprobe_for_target": enough[0] if enough else None,
        "rules": {rule: {"nprobe": p, "recall": curve[p][0], "recall_ties": curve[p][1],
                         "qps": qps[f"ivf_{rule}"], "raw_faiss_qps": qps[f"raw_{rule}"],
                         "qps_over_raw": qps[f"ivf_{rule}"] / qps[f"raw_{rule}"],
                         "qps_over_flat": qps[f"ivf_{rule}"] / qps["flat"]}
                  for rule, p in rules.items()},
        "flat_qps": qps["flat"],
        "grown": worst,
        "target_met": min(curve[rules["new"]][0], worst["new"]["recall"] if worst else 1.0)
        >= TARGET_RECALL,
    }  # fmt: skip


def timed(methods: dict[str, Callable[[], None]], queries: int, rounds: int) -> dict[str, float]:
    names = list(methods)
    for call in methods.values():
        call()
    seconds = dict.fromkeys(names, 0.0)
    for r in range(rounds):
        for m in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            methods[m]()
            seconds[m] += time.perf_counter() - t0
    return {m: queries * rounds / s for m, s in seconds.items()}


def embed(texts: list[str]) -> F32:
    from conveyor.vector.embedders import get_embedder

    return get_embedder("hashing").embed(texts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.vector.replica import IVF_MIN_TRAIN, load_faiss, set_faiss_threads

    machine = h.machine_info()
    if min(args.sizes) < IVF_MIN_TRAIN:
        raise SystemExit(f"--sizes: an ivf collection is exact below {IVF_MIN_TRAIN} vectors")
    load_faiss()
    set_faiss_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    per_package, docs = docstrings(args.packages.split())
    docs = [docs[i] for i in rng.permutation(len(docs))]
    extra = chunks(docs, max(0, max(args.sizes) - len(docs)), rng)
    vectors = embed(docs + extra)
    print(f"[bench] {len(docs)} docstrings + {len(extra)} chunks embedded in "
          f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)  # fmt: skip
    sizes = {}
    for n in args.sizes:
        print(f"[bench] size {n}", file=sys.stderr)
        sizes[str(n)] = measure(n, vectors[:n], docs[: min(n, len(docs))], args)
    keys = ("sizes", "queries", "k", "batch", "rounds", "threads", "seed")
    config = {key: getattr(args, key) for key in keys}
    corpus = {"docstrings": len(docs), "chunks": len(extra), "packages": per_package}
    return {"benchmark": "ivf_recall", "machine": machine, "config": config,
            "corpus": corpus, "sizes": sizes}  # fmt: skip


def report(result: dict[str, Any]) -> None:
    cfg, sizes, corpus = result["config"], result["sizes"], result["corpus"]
    print(f"corpus: {corpus['docstrings']} docstrings from {len(corpus['packages'])} packages, "
          f"{corpus['chunks']} chunks; k={cfg['k']}, {cfg['queries']} queries, batches of "
          f"{cfg['batch']}, {cfg['rounds']} rounds, {cfg['threads']} faiss threads")  # fmt: skip
    for n, s in sizes.items():
        rows = [
            [p, f"{r['recall']:.3f}", f"{r['recall_ties']:.3f}"] for p, r in s["recall"].items()
        ]
        h.print_table(f"{n} vectors, nlist {s['nlist']}: recall@{cfg['k']} by nprobe",
                      ["nprobe", "recall", "recall (ties)"], rows)  # fmt: skip
    rows = [
        [n, s["nlist"], rule, r["nprobe"], f"{r['recall']:.3f}", f"{r['recall_ties']:.3f}",
         r["qps"], r["raw_faiss_qps"], r["qps_over_raw"], r["qps_over_flat"],
         s["min_nprobe_for_target"]]
        for n, s in sizes.items()
        for rule, r in s["rules"].items()
    ]  # fmt: skip
    h.print_table(
        "Rules, fresh index: old nlist // 8, new default_nprobe",
        ["vectors", "nlist", "rule", "nprobe", "recall", "(ties)", "QPS", "raw QPS", "/ raw",
         "/ flat", "least nprobe >= target"],
        rows,
    )  # fmt: skip
    rows = [
        [n, g["trained_on"], g["nlist"], rule, g[rule]["nprobe"], f"{g[rule]['recall']:.3f}"]
        for n, s in sizes.items()
        if (g := s["grown"])
        for rule in ("old", "new")
    ]
    h.print_table(
        "Rules, grown index (trained on the fewest vectors before a retrain)",
        ["vectors", "trained on", "nlist", "rule", "nprobe", "recall"],
        rows,
    )
    met = all(s["target_met"] for s in sizes.values())
    print(f"verdict: recall@{cfg['k']} >= {TARGET_RECALL} with the new default at every size, "
          f"fresh and grown: {'MET' if met else 'MISSED'}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--sizes", type=int, nargs="+", default=[1024, 2000, 5000, 20_000, 100_000],
        help="collection sizes (1024 2000 5000 20000 100000)")  # fmt: skip
    add("--queries", type=int, default=1000, help="queries per size (1000)")
    add("-k", type=int, default=10, help="neighbours per query (10)")
    add("--batch", type=int, default=100, help="queries per search call (100)")
    add("--rounds", type=int, default=5, help="timed QPS rounds, order rotating (5)")
    add("--threads", type=int, default=2, help="faiss OpenMP threads (2)")
    add("--packages", default=PACKAGES, help="the packages whose docstrings make the corpus")
    add("--seed", type=int, default=1, help="shuffle, chunk and query seed (1)")
    add("--json", action="store_true", help="print the results as JSON")
    return h.run_main(parser, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
