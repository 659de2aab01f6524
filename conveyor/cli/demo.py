"""`conveyor demo`: the main job on the embedded default, start to finish."""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from conveyor.analytics import Report
from conveyor.cli.common import console, get_app, json_option, print_json, print_table
from conveyor.client import Client
from conveyor.embedded import Embedded
from conveyor.models.runs import RunStatus
from conveyor.workers.supervisor import Supervisor

DEMO_TURNS = [
    ("system", "You are a helpful support agent for conveyor."),
    ("user", "My workers on the vector pool stopped scaling up."),
    ("assistant", "KEDA scales each pool on its queue depth; is the exporter reachable?"),
    ("user", "The exporter answers, but the queue depth reads zero."),
    ("assistant", "Then check CONVEYOR_QUEUE_PREFIX: the exporter must use the workers' prefix."),
]


def _memory_step(client: Client, sessions: int = 5) -> dict[str, object]:
    """Remember a short conversation in a few sessions, then recall and search it."""
    namespace = f"demo-{int(time.time())}"
    t0 = time.perf_counter()
    pending = [
        client.memory.remember_async(
            namespace, f"session-{n}", items=[{"role": r, "content": c} for r, c in DEMO_TURNS]
        )
        for n in range(sessions)
    ]
    client.wait_many(pending, timeout=60)
    remembered = time.perf_counter() - t0
    recall_ms = []
    for n in range(sessions * 4):
        t = time.perf_counter()
        window = client.memory.recall(namespace, f"session-{n % sessions}", max_tokens=60)
        recall_ms.append((time.perf_counter() - t) * 1000)
    hits = client.memory.search(namespace, "queue depth exporter").hits
    return {
        "memory_items": client.memory.stats(namespace).items,
        "memory_remember_s": round(remembered, 3),
        "memory_recall_ms_p50": round(_percentile(recall_ms, 50), 2),
        "memory_window_items": len(window.items),
        "memory_search_hits": len(hits),
    }


DEMO_MODULES = (
    "json", "os", "re", "pathlib", "collections", "itertools", "functools",
    "datetime", "subprocess", "threading", "asyncio", "logging", "argparse",
)  # fmt: skip
DEMO_QUERIES = (
    "parse a JSON document",
    "run a command in a subprocess",
    "match a regular expression",
)


def _docstrings() -> list[tuple[str, str]]:
    """(qualified name, first paragraph) of the public objects of a few stdlib modules."""
    import importlib
    import inspect

    found: dict[str, str] = {}
    for module_name in DEMO_MODULES:
        module = importlib.import_module(module_name)
        for attr, value in [(module_name, module), *inspect.getmembers(module)]:
            doc = inspect.getdoc(value) if not attr.startswith("_") else None
            name = attr if attr == module_name else f"{module_name}.{attr}"
            if doc and getattr(value, "__module__", module_name).startswith(module_name):
                found.setdefault(name, doc.split("\n\n")[0][:2000])
    return sorted(found.items())


def _vector_step(client: Client) -> dict[str, object]:
    """Index stdlib docstrings in a collection, search it by text, then drop it."""
    collection = f"demo-{int(time.time())}"
    corpus = _docstrings()
    client.vector.create_collection(collection, index="auto")
    t0 = time.perf_counter()
    for start in range(0, len(corpus), 500):
        batch = corpus[start : start + 500]
        client.vector.upsert(collection, [{"id": n, "text": d} for n, d in batch])
    indexed = time.perf_counter() - t0
    search_ms, top = [], []
    for query in DEMO_QUERIES * 5:
        t = time.perf_counter()
        result = client.vector.search(collection, [query], k=3, include=())
        search_ms.append((time.perf_counter() - t) * 1000)
        top.append(result.ids[0][0] if result.ids[0] else "")
    client.vector.drop_collection(collection)
    return {
        "vector_items": len(corpus),
        "vector_index_s": round(indexed, 3),
        "vector_search_ms_p50": round(_percentile(search_ms, 50), 2),
        "vector_top_hits": dict(zip(DEMO_QUERIES, top, strict=False)),
    }


def _report_step(client: Client) -> dict[str, Any]:
    """The analytics report of the last 15 minutes, run by the analytics pool."""
    run_id = client.submit("analytics.report", {"since_seconds": 900})
    report = Report.model_validate(client.result(run_id, timeout=120))
    return {
        "report_runs": report.runs,
        "report_busiest": {
            a.agent: f"{a.runs} runs, p95 {a.duration_p95 or 0:.3f}s, "
            f"{100 * a.within_slo:.0f}% within SLO"
            for a in report.busiest
        },
    }


def _percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if len(values) > 1
        else (values[0] if values else 0.0)
    )


@click.command()
@click.option(
    "--runs",
    "count",
    type=click.IntRange(1, 1_000_000),
    default=3000,
    show_default=True,
    help="How many conveyor.ping runs to submit.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds to wait for all runs.",
)
@json_option
def demo(count: int, timeout: float, as_json: bool) -> None:
    """Start the services and one worker per pool, push COUNT runs through, report, stop.

    Prints throughput, latency p50/p99 (enqueue to finish, from agent_runs) and failures,
    then remembers a short conversation in prompt memory, recalls and searches it, and
    indexes the docstrings of a few standard-library modules for vector search by text.
    """
    app = get_app()
    started_embedded = app.embedded
    supervisor = Supervisor(
        app,
        sorted(app.settings.pools),
        node_suffix=".demo",
        grace=app.settings.time_limit + 5,
        log_dir=str(app.settings.data_dir / "logs"),
    )
    quiet = as_json or not console.is_terminal
    try:
        with console.status("starting workers...", spinner="dots") if not quiet else nullcontext():
            supervisor.start()
            supervisor.wait_ready()
        client = Client(app)
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=console, disable=as_json) as progress:
            submitted = progress.add_task("submit", total=count)
            finished = progress.add_task("finish", total=count)
            t0 = time.perf_counter()
            ids = client.submit_many(
                "conveyor.ping",
                ({"i": i} for i in range(count)),
                on_progress=lambda n: progress.advance(submitted, n),
            )
            t_submit = time.perf_counter() - t0
            done = client.wait_many(
                ids, timeout, on_progress=lambda n: progress.advance(finished, n)
            )
            elapsed = time.perf_counter() - t0
        with console.status("memory...", spinner="dots") if not quiet else nullcontext():
            memory = _memory_step(client)
        with console.status("vector search...", spinner="dots") if not quiet else nullcontext():
            vector = _vector_step(client)
        with console.status("analytics report...", spinner="dots") if not quiet else nullcontext():
            report = _report_step(client)
        client.close()
    finally:
        supervisor.stop()
        if started_embedded:
            Embedded(app.settings.data_dir).stop()
    latencies = [
        (r.finished_at - r.enqueued_at).total_seconds() * 1000
        for r in done.values()
        if r.finished_at and r.enqueued_at
    ]
    failures = sum(1 for r in done.values() if r.status is not RunStatus.SUCCEEDED)
    summary = {
        "runs": count,
        "failures": failures,
        "seconds": round(elapsed, 3),
        "submit_per_s": round(count / t_submit, 1),
        "throughput_per_s": round(count / elapsed, 1),
        "latency_ms_p50": round(_percentile(latencies, 50), 2),
        "latency_ms_p99": round(_percentile(latencies, 99), 2),
        **memory,
        **vector,
        **report,
        "workers": sorted(app.settings.pools),
    }
    if as_json:
        print_json(summary)
    else:
        rows = [
            (k, "\n".join(f"{a} → {b}" for a, b in v.items()) if isinstance(v, dict) else v)
            for k, v in summary.items()
        ]
        print_table("conveyor demo", ["metric", "value"], rows)
    if failures:
        raise SystemExit(1)
