"""Runs of one agent submitted together, as agent_runs records them when they are queued.

`Client.submit_many` records thousands of runs a second: a batch holds their ids, inputs and
keys side by side, with what they share once, and travels as one statement
(`statements.ENQUEUE_BATCH`): no model object per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python

from conveyor.models import jsonb


@dataclass(frozen=True, slots=True)
class QueuedBatch:
    """Runs of `agent` enqueued at `enqueued_at`: `ids[i]` has input `inputs[i]` (what is
    recorded of it) and idempotency key `keys[i]`."""

    agent: str
    pool: str
    queue: str | None
    enqueued_at: datetime
    ids: Sequence[str]
    inputs: Sequence[dict[str, Any]]
    keys: Sequence[str | None]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def keyed(self) -> bool:
        return any(key is not None for key in self.keys)

    def params(self) -> dict[str, Any]:
        """The parameters of ENQUEUE_BATCH."""
        return {
            "agent": self.agent,
            "pool": self.pool,
            "queue": self.queue,
            "enqueued_at": self.enqueued_at,
            "rows": self.rows(),
        }

    def rows(self) -> str:
        """The runs as JSON rows for jsonb_to_recordset; an input with values JSON has no
        type for (datetimes, decimals) is stored as their JSON form, as NewRun stores it."""
        rows = [
            {"id": run_id, "input": payload, "idempotency_key": key}
            for run_id, payload, key in zip(self.ids, self.inputs, self.keys, strict=True)
        ]
        try:
            return jsonb.dumps_rows(rows, ("input",))
        except TypeError:
            for row in rows:
                row["input"] = to_jsonable_python(row["input"])
            return jsonb.dumps_rows(rows, ("input",))
