"""Benchmark-only agents, loaded by workers and clients through CONVEYOR_AGENT_MODULES.

`bench.ping` is `conveyor.ping` as a user would write it: the same body and pool, but
declared with the defaults of `@agent` (not `idempotent=True`), so every run pays what a
default agent pays: the claim in PostgreSQL before it runs (one round trip and the
`started` row). `retries=0` as conveyor.ping, so the claim is the only difference.
"""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor.agents import agent
from conveyor.context import current_run
from conveyor.ping import PingOutput

MODULE = __name__
DEFAULT_PING = "bench.ping"
IDEMPOTENT_PING = "conveyor.ping"


@agent(name=DEFAULT_PING, pool="default", retries=0)
def ping(**payload: Any) -> PingOutput:
    """conveyor.ping's body, as a default (claimed) agent."""
    run = current_run()
    return PingOutput(echo=payload, hostname=run.worker, pool=run.pool, run_id=run.id)


WAIT = "bench.wait"
NOOP = "bench.noop"


@agent(name=WAIT, pool="io", retries=0)
async def wait(seconds: float = 0.0, i: int = 0) -> dict[str, Any]:
    """An agent that only waits, as one waiting on an LLM would (asyncio.sleep)."""
    await asyncio.sleep(seconds)
    return {"i": i}


@agent(name=NOOP, pool="io", retries=0)
async def noop(i: int = 0) -> dict[str, Any]:
    """A no-op async agent: what the pool itself costs per run."""
    return {"i": i}
