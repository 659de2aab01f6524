"""The demo's stages, each a batch of runs of one example agent, submitted and awaited."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from conveyor.client import Client
from conveyor.demo.corpus import MODULES, MORE_MODULES, Question, docstrings, questions
from conveyor.demo.live import Live
from conveyor.errors import InvalidInput
from conveyor.runs.records import Run

RESEARCH_NAMESPACE = "examples"
"""Memory namespace of the research runs; each demo uses its own session in it."""


@dataclass(frozen=True)
class Size:
    modules: tuple[str, ...]
    questions: int
    fetches: int
    pages: int
    """Simulated pages per fetch run, awaited concurrently."""
    flaky: int


SIZES = {
    "small": Size(MODULES[:3], questions=12, fetches=4, pages=10, flaky=2),
    "default": Size(MODULES + MORE_MODULES[:12], questions=300, fetches=40, pages=25, flaky=6),
    "large": Size(MODULES + MORE_MODULES, questions=2000, fetches=200, pages=50, flaky=20),
}


@dataclass
class Stage:
    name: str
    agent: str
    runs: list[Run]
    seconds: float


@dataclass
class Workload:
    """Everything the summary needs, gathered while the stages run."""

    stages: list[Stage] = field(default_factory=list)
    documents: int = 0
    questions: list[Question] = field(default_factory=list)
    refused_at_submit: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def _stage(
    client: Client,
    live: Live,
    name: str,
    agent: str,
    payloads: list[dict[str, Any]],
    timeout: float,
) -> Stage:
    bar = live.stage(name, len(payloads))
    t0 = time.perf_counter()
    ids = client.submit_many(agent, payloads, on_progress=bar.submitted)
    done = client.wait_many(ids, timeout, on_progress=bar.finished)
    return Stage(name, agent, [done[i] for i in ids], time.perf_counter() - t0)


def _malformed(client: Client, live: Live, timeout: float) -> tuple[Stage, list[str]]:
    """A malformed research question, twice: refused at submit, and rejected by a worker.

    `Client.submit` validates first and raises InvalidInput naming the fields; nothing is
    written. A plain Celery client skips that check, so the worker validates, records the
    run as `rejected` with the field errors, and never retries it.
    """
    bad = {"question": "?", "collection": "", "k": 0}
    refused: list[str] = []
    try:
        client.submit("examples.research", bad)
    except InvalidInput as exc:
        refused = [".".join(str(p) for p in e.get("loc", ())) for e in exc.errors]
    bar = live.stage("malformed", 1)
    t0 = time.perf_counter()
    spec = client.app.agents.get("examples.research")
    sent = client.app.send_task("examples.research", kwargs=bad, queue=client.app.agent_queue(spec))
    bar.submitted(1)
    run = client.wait(sent.id, timeout)
    bar.finished(1)
    return Stage("malformed", "examples.research", [run], time.perf_counter() - t0), refused


def run_workload(client: Client, live: Live, size: Size, timeout: float) -> Workload:
    """Run every stage in order; the caller has started the workers."""
    tag = f"demo-{int(time.time())}"
    work = Workload()
    corpus = docstrings(size.modules)
    work.documents = len(corpus)
    client.vector.create_collection(tag, embedder="hashing", index="auto")
    ingest = _stage(
        client,
        live,
        "ingest",
        "examples.ingest",
        [{"collection": tag, "modules": [m]} for m in size.modules],
        timeout,
    )
    work.stages.append(ingest)
    seq = max((r.output or {}).get("seq", 0) for r in ingest.runs)
    work.questions = questions(corpus, size.questions)
    work.stages.append(
        _stage(
            client,
            live,
            "research",
            "examples.research",
            [
                {
                    "question": q.text,
                    "collection": tag,
                    "namespace": RESEARCH_NAMESPACE,
                    "session": tag,
                    "min_seq": seq,
                }
                for q in work.questions
            ],
            timeout,
        )
    )
    work.stages.append(
        _stage(
            client,
            live,
            "recall",
            "memory.recall",
            [{"namespace": RESEARCH_NAMESPACE, "session": tag, "last": 10_000}],
            timeout,
        )
    )
    work.stages.append(
        _stage(
            client,
            live,
            "fetch",
            "examples.fetch",
            [
                {"urls": [f"https://example.org/{n}/{p}" for p in range(size.pages)]}
                for n in range(size.fetches)
            ],
            timeout,
        )
    )
    work.stages.append(
        _stage(
            client,
            live,
            "flaky",
            "examples.flaky",
            [{"failures": 1 + n % 2, "key": f"{tag}-{n}"} for n in range(size.flaky)],
            timeout,
        )
    )
    malformed, work.refused_at_submit = _malformed(client, live, timeout)
    work.stages.append(malformed)
    since = sum(s.seconds for s in work.stages) + 60
    report = _stage(client, live, "report", "analytics.report", [{"since_seconds": since}], timeout)
    work.stages.append(report)
    work.report = report.runs[0].output or {}
    return work
