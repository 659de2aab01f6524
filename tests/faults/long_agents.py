"""An agent whose own hard time limit (30 s) is longer than the default one: a deployment
that loads it needs a visibility timeout above 30 s."""

from __future__ import annotations

from conveyor import agent


@agent(name="faults.long", time_limit=30)
def long(seconds: float) -> float:
    return seconds
