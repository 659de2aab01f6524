"""A duplicate submit with one idempotency key, from 8 processes at once: one run owns the
key, every caller gets its id, one message reaches the broker, and its effect happens once."""

from __future__ import annotations

import multiprocessing
import uuid

from sqlalchemy import text

from conveyor.metrics.queues import QueueReader
from tests.faults.agents import LEDGER
from tests.faults.harness import (
    FaultEnv,
    assert_ledger,
    executions,
    start_worker,
    submit_with_key,
    wait_final,
)

PRODUCERS = 8


def test_eight_processes_submitting_one_key_at_once_make_one_run(redis_env: FaultEnv) -> None:
    key = f"order-{uuid.uuid4().hex}"
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.faults.harness"])
    barrier, results = ctx.Barrier(PRODUCERS), ctx.Queue()
    producers = [
        ctx.Process(target=submit_with_key, args=(redis_env.env, LEDGER, key, barrier, results))
        for _ in range(PRODUCERS)
    ]
    for proc in producers:
        proc.start()
    try:
        ids = [results.get(timeout=90) for _ in producers]
    finally:
        for proc in producers:
            proc.join(30)
    assert [p.exitcode for p in producers] == [0] * PRODUCERS
    assert len(set(ids)) == 1, f"every caller gets the owner's run id: {ids}"
    with redis_env.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, idempotency_key FROM agent_runs")).all()
    assert [tuple(r) for r in rows] == [(ids[0], key)], "one run row, owning the key"
    queue = f"{redis_env.prefix}default"
    waiting = {s.queue: s.ready + s.reserved for s in QueueReader(redis_env.app).read()}
    assert waiting[queue] == 1, "one message was published (counted on the broker, no worker)"
    start_worker(redis_env)
    wait_final(redis_env, ids[:1], timeout=60)
    assert_ledger(redis_env, ids[:1])
    assert executions(redis_env, ids[:1]) == {ids[0]: 1}
