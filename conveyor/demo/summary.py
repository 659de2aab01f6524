"""The demo's summary: throughput, latency per agent, retries, rejections, recall, the io
pool's runs in flight at once, next steps."""

from __future__ import annotations

import shutil
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from conveyor.demo.stages import Workload
from conveyor.runs.records import Run
from conveyor.runs.status import RunStatus

IO_POOL = "io"
"""The asyncio pool the demo's waiting agents (research, fetch) run on."""


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _latency_ms(run: Run) -> float | None:
    if run.finished_at and run.enqueued_at:
        return (run.finished_at - run.enqueued_at).total_seconds() * 1000
    return None


def peak_in_flight(spans: Iterable[tuple[float, float]]) -> int:
    """Most (start, end) spans open at one moment; one that ends as another starts does not
    overlap it."""
    edges = sorted(edge for start, end in spans for edge in ((start, 1), (end, -1)))
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def pool_peak_in_flight(runs: Iterable[Run], pool: str) -> int:
    """Most runs of `pool` between their start and their end at one moment (agent_runs)."""
    return peak_in_flight(
        (r.started_at.timestamp(), r.finished_at.timestamp())
        for r in runs
        if r.pool == pool and r.started_at and r.finished_at
    )


def recall(work: Workload) -> float:
    """The share of research answers whose top source is the question's own docstring."""
    research = next((s for s in work.stages if s.name == "research"), None)
    if research is None or not work.questions:
        return 0.0
    hits = 0
    for question, run in zip(work.questions, research.runs, strict=True):
        sources = (run.output or {}).get("sources") or [{}]
        hits += sources[0].get("id") == question.source
    return round(hits / len(work.questions), 3)


def summarise(work: Workload, peak_depth: dict[str, int], startup: float) -> dict[str, Any]:
    runs = [r for s in work.stages for r in s.runs]
    by_agent: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_agent[run.agent].append(run)
    agents = {}
    for name, group in sorted(by_agent.items()):
        latencies = [ms for r in group if (ms := _latency_ms(r)) is not None]
        durations = [
            (r.finished_at - r.started_at).total_seconds() * 1000
            for r in group
            if r.finished_at and r.started_at
        ]
        agents[name] = {
            "runs": len(group),
            "succeeded": sum(r.status is RunStatus.SUCCEEDED for r in group),
            "latency_ms_p50": round(percentile(latencies, 50), 1),
            "latency_ms_p99": round(percentile(latencies, 99), 1),
            "run_ms_p50": round(percentile(durations, 50), 1),
            "retries": sum(max(r.attempts - 1, 0) for r in group),
        }
    expected_rejected = {r.id for s in work.stages if s.name == "malformed" for r in s.runs}
    rejected = [r for r in runs if r.status is RunStatus.REJECTED]
    unexpected = [
        r for r in runs if r.status is not RunStatus.SUCCEEDED and r.id not in expected_rejected
    ]
    recalled = next((s for s in work.stages if s.name == "recall"), None)
    window = (recalled.runs[0].output or {}) if recalled else {}
    fetch = next((s for s in work.stages if s.name == "fetch"), None)
    outputs = [r.output for r in (fetch.runs if fetch else []) if r.output]
    seconds = sum(s.seconds for s in work.stages)
    return {
        "startup_seconds": round(startup, 2),
        "seconds": round(seconds, 2),
        "runs": len(runs),
        "throughput_per_s": round(len(runs) / seconds, 1) if seconds else 0.0,
        "stages": {
            s.name: {
                "agent": s.agent,
                "runs": len(s.runs),
                "seconds": round(s.seconds, 2),
                "per_s": round(len(s.runs) / s.seconds, 1) if s.seconds else 0.0,
            }
            for s in work.stages
        },
        "agents": agents,
        "documents": work.documents,
        "questions": len(work.questions),
        "recall": recall(work),
        "remembered": len(window.get("items", [])),
        "fetch_concurrency": round(
            sum(o["sequential_seconds"] for o in outputs)
            / max(sum(o["seconds"] for o in outputs), 1e-9),
            1,
        ),
        "io_peak_in_flight": pool_peak_in_flight(runs, IO_POOL),
        "retries": sum(a["retries"] for a in agents.values()),
        "rejected": len(rejected),
        "rejected_errors": [r.error_message for r in rejected],
        "refused_at_submit": work.refused_at_submit,
        "failures": len(unexpected),
        "failure_examples": [
            f"{r.id} {r.agent} {r.status.value}: {r.error_message}" for r in unexpected[:5]
        ],
        "peak_queue_depth": peak_depth,
        "report": {
            "runs": work.report.get("runs", 0),
            "busiest": [a["agent"] for a in work.report.get("busiest", [])],
            "failure_types": {
                f["error_type"]: f["count"] for f in work.report.get("failure_types", [])
            },
        },
    }


FALLBACK_WIDTH = 100
"""Columns when the width is unknown (not a terminal, no COLUMNS)."""


def render(
    console: Console, summary: dict[str, Any], next_steps: list[str], width: int | None = None
) -> None:
    """Print the tables, wrapped to `width` (default: the terminal's); `--json` has it all."""
    width = width or shutil.get_terminal_size((FALLBACK_WIDTH, 24)).columns
    table = Table(
        title="conveyor demo: per agent",
        caption="latency: enqueued to finished (queue wait included); run: started to finished",
    )
    for column in ("agent", "runs", "ok", "p50 ms", "p99 ms", "run p50 ms", "retries"):
        table.add_column(column, justify="left" if column == "agent" else "right")
    for name, a in summary["agents"].items():
        table.add_row(
            name,
            str(a["runs"]),
            str(a["succeeded"]),
            f"{a['latency_ms_p50']:.1f}",
            f"{a['latency_ms_p99']:.1f}",
            f"{a['run_ms_p50']:.1f}",
            str(a["retries"]),
        )
    console.print(table, width=width)
    totals = Table(title="conveyor demo: summary", show_header=False)
    totals.add_column("metric", no_wrap=True)
    totals.add_column("value")
    rows = [
        ("start-up", f"{summary['startup_seconds']} s"),
        ("workload", f"{summary['runs']} runs in {summary['seconds']} s "
                     f"({summary['throughput_per_s']} runs/s)"),
        ("stages", ", ".join(f"{n} {s['runs']} in {s['seconds']} s"
                             for n, s in summary["stages"].items())),
        ("corpus", f"{summary['documents']} stdlib docstrings indexed"),
        ("recall", f"{summary['recall']:.0%} of {summary['questions']} answers cite "
                   "their source docstring first"),
        ("memory", f"{summary['remembered']} questions and answers remembered in the session"),
        ("async fetch", f"{summary['fetch_concurrency']}x concurrency on the event loop"),
        ("io pool", f"{summary['io_peak_in_flight']} runs in flight at once at peak (asyncio)"),
        ("retries", str(summary["retries"])),
        ("rejected", f"{summary['rejected']}: " + "; ".join(summary["rejected_errors"])),
        ("refused at submit", ", ".join(summary["refused_at_submit"])),
        ("failures", str(summary["failures"])),
        ("peak queue depth", ", ".join(f"{p} {n}" for p, n in summary["peak_queue_depth"].items())),
        ("report", f"{summary['report']['runs']} runs; busiest "
                   + ", ".join(summary["report"]["busiest"])),
        ("next", "\n".join(next_steps)),
    ]  # fmt: skip
    for key, value in rows:
        totals.add_row(key, value)
    console.print(totals, width=width)
