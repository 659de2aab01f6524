"""The `conveyor.ping` diagnostic agent of the default pool (the `ping` entry point)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from conveyor.agents import agent
from conveyor.context import current_run


class PingOutput(BaseModel):
    echo: dict[str, Any]
    hostname: str
    pool: str
    run_id: str


@agent(name="conveyor.ping", pool="default", retries=0, idempotent=True)
def ping(**payload: Any) -> PingOutput:
    """Diagnostic: echo the input with the worker that ran it."""
    run = current_run()
    return PingOutput(echo=payload, hostname=run.worker, pool=run.pool, run_id=run.id)
