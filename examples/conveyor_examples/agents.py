"""The example agents. Each calls conveyor's services in-process, as any agent may.

Inside a run, `current_run().settings` holds the resolved service URLs, and
`conveyor.vector.service_for` / `conveyor.memory.store_for` give this worker process's vector
service and memory store: plain Python over PostgreSQL (the truth) and Redis.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, Field

from conveyor import TransientError, agent, current_run
from conveyor.demo.corpus import docstrings
from conveyor.memory import NewItem, RememberRequest, SearchRequest, store_for
from conveyor.vector import NewVector, Query, Search, Upsert, service_for

BATCH = 500
DOC_WEIGHT, MEMORY_WEIGHT, RRF_K = 1.0, 0.5, 60
"""Reciprocal rank fusion of the two rankings; memory (earlier answers) counts half."""
_WORD = re.compile(r"[a-z0-9_]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


# --- ingest -----------------------------------------------------------------------------------


class Ingested(BaseModel):
    collection: str
    modules: list[str]
    documents: int
    seq: int
    """The collection's seq after the last batch: pass it as `min_seq` to read these writes."""


@agent(name="examples.ingest", pool="vector", time_limit=600)
def ingest(
    collection: str = Field(min_length=1, max_length=200),
    modules: list[str] = Field(min_length=1, max_length=100),  # noqa: B008
) -> Ingested:
    """Embed the docstrings of the given stdlib modules and upsert them into `collection`."""
    corpus = docstrings(modules)
    service = service_for(current_run().settings)
    seq = 0
    for start in range(0, len(corpus), BATCH):
        items = [
            NewVector(id=name, text=doc, metadata={"module": name.split(".")[0]})
            for name, doc in corpus[start : start + BATCH]
        ]
        seq = service.upsert(Upsert(collection=collection, items=items)).seq
    return Ingested(collection=collection, modules=modules, documents=len(corpus), seq=seq)


# --- research ---------------------------------------------------------------------------------


class Question(BaseModel):
    question: str = Field(min_length=3, max_length=2000)
    collection: str = Field(min_length=1, max_length=200)
    namespace: str = Field(default="examples", min_length=1, max_length=200)
    session: str = Field(default="research", min_length=1, max_length=200)
    k: int = Field(default=5, ge=1, le=50)
    min_seq: int | None = Field(default=None, ge=0)


class Source(BaseModel):
    id: str
    kind: Literal["document", "memory"]
    score: float
    text: str


class Answer(BaseModel):
    question: str
    answer: str
    sources: list[Source]
    """Fused ranking, best first: documents of the collection and items of the session."""


Composer = Callable[[str, list[Source]], str | Awaitable[str]]
"""A function (run in a thread) or a coroutine function (awaited: an LLM client's call)."""


def extractive(question: str, sources: list[Source], max_sentences: int = 3) -> str:
    """The sentences of the top sources that share the most words with the question."""
    wanted = set(_WORD.findall(question.lower()))
    scored: list[tuple[float, int, str]] = []
    for rank, source in enumerate(sources[:3]):
        for sentence in _SENTENCE.split(source.text):
            overlap = len(wanted & set(_WORD.findall(sentence.lower())))
            if overlap:
                scored.append((overlap / (1 + rank), -len(scored), sentence.strip()))
    best = sorted(scored, reverse=True)[:max_sentences]
    return " ".join(s for *_, s in best) or "No answer found."


_composer: Composer = extractive


def set_composer(composer: Composer) -> Composer:
    """Plug in another composer (an LLM call, say) for `examples.research`; returns the old one.

    An `async def` composer is awaited on the io worker's loop, so a run waiting on the model
    holds no thread; a plain function runs in one of the pool's threads.

    Call it at import time of a module the workers load (`CONVEYOR_AGENT_MODULES`).
    """
    global _composer
    previous, _composer = _composer, composer
    return previous


async def _compose(question: str, sources: list[Source]) -> str:
    """The composer called in a thread; the coroutine an `async def` one returns is awaited."""
    answer = await asyncio.to_thread(_composer, question, sources)
    return answer if isinstance(answer, str) else await answer


@agent(name="examples.research", pool="io", retries=2)
async def research(request: Question) -> Answer:
    """Hybrid search (collection + session memory), an answer composed (extractive, or the
    plugged-in composer: an LLM's), remembered. The searches and the write run in threads."""
    settings = current_run().settings
    found = await asyncio.to_thread(
        service_for(settings).search,
        Search(
            collection=request.collection,
            queries=[Query(text=request.question)],
            k=request.k,
            min_seq=request.min_seq,
            include=["text"],
        ),
    )
    store = store_for(settings)
    memory = await asyncio.to_thread(
        store.search,
        SearchRequest(
            namespace=request.namespace,
            session=request.session,
            query=request.question,
            mode="hybrid",
            limit=request.k,
        ),
    )
    fused: dict[str, Source] = {}
    texts = found.texts[0] if found.texts else [None] * len(found.ids[0])
    for rank, (doc_id, text) in enumerate(zip(found.ids[0], texts, strict=True)):
        fused[doc_id] = Source(
            id=doc_id, kind="document", score=DOC_WEIGHT / (RRF_K + rank + 1), text=text or ""
        )
    for rank, hit in enumerate(memory.hits):
        key = f"memory:{hit.item.id}"
        fused[key] = Source(
            id=key, kind="memory", score=MEMORY_WEIGHT / (RRF_K + rank + 1), text=hit.item.content
        )
    sources = sorted(fused.values(), key=lambda s: -s.score)[: request.k]
    answer = await _compose(request.question, sources)
    await asyncio.to_thread(
        store.remember,
        RememberRequest(
            namespace=request.namespace,
            session=request.session,
            embed=True,
            items=[
                NewItem(content=request.question, role="user"),
                NewItem(
                    content=answer,
                    role="assistant",
                    metadata={"sources": [s.id for s in sources[:3]]},
                ),
            ],
        ),
    )
    return Answer(question=request.question, answer=answer, sources=sources)


# --- fetch (async) ----------------------------------------------------------------------------


class Fetched(BaseModel):
    pages: int
    seconds: float
    """Wall time of the run: about one latency, however many pages, as they are awaited together."""
    sequential_seconds: float
    """What the same waits would have taken one after another."""


@agent(name="examples.fetch", pool="io")
async def fetch(
    urls: list[str] = Field(min_length=1, max_length=1000),  # noqa: B008
    latency_ms: int = Field(default=200, ge=0, le=60_000),
) -> Fetched:
    """Simulated I/O: 'fetch' every url concurrently on the worker's event loop."""

    async def one(i: int) -> float:
        delay = latency_ms / 1000 * (0.5 + (i % 5) / 8)
        await asyncio.sleep(delay)
        return delay

    t0 = time.perf_counter()
    delays = await asyncio.gather(*(one(i) for i in range(len(urls))))
    return Fetched(
        pages=len(urls),
        seconds=round(time.perf_counter() - t0, 4),
        sequential_seconds=round(sum(delays), 4),
    )


# --- flaky ------------------------------------------------------------------------------------


class Flaked(BaseModel):
    attempts: int


@agent(name="examples.flaky", pool="default", retries=4, retry_backoff=1, retry_backoff_max=2)
def flaky(failures: int = Field(default=2, ge=0, le=4), key: str = "") -> Flaked:
    """Fail with a TransientError on the first `failures` attempts, then succeed.

    `key` only tells runs apart. Transient errors are retried with exponential backoff and
    jitter (here at most 1, 2, 2, 2 s); any other exception fails the run at once.
    """
    attempt = current_run().attempt
    if attempt <= failures:
        raise TransientError(f"simulated outage (attempt {attempt} of {failures + 1})")
    return Flaked(attempts=attempt)
