"""What a dead letter holds: the original message, size-capped, and the run's error history."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from conveyor.dlq.table import DeadLetterReason
from conveyor.redaction import mask_secrets
from conveyor.runs.statements import ERROR_MESSAGE_CHARS

KEPT_BODY_BYTES = 64 * 1024
"""A message that cannot be replayed keeps this much of its body, enough to see what it was."""


def _jsonable(value: Any) -> Any:
    """`value` as plain JSON data: anything JSON cannot hold (bytes, dates) becomes text."""
    return json.loads(json.dumps(value, default=str))


def error_entry(
    attempt: int, error_type: str, message: str, worker: str | None, status: str = "failed"
) -> dict[str, Any]:
    """One item of an error history, shaped like those agent_runs records for each attempt."""
    return {
        "attempt": attempt,
        "status": status,
        "type": error_type,
        "message": message[:ERROR_MESSAGE_CHARS],
        "worker": worker,
        "at": datetime.now(UTC).isoformat(),
    }


class _Letter(BaseModel):
    """What every dead letter holds: where it came from, why, and the message."""

    pool: str
    reason: DeadLetterReason
    detail: str
    queue: str | None = None
    run_id: str | None = None
    task: str | None = None
    headers: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    body: str | None = None
    body_bytes: int = 0
    body_truncated: bool = False
    content_type: str | None = None
    errors: list[dict[str, Any]] = []


class NewDeadLetter(_Letter):
    """A dead letter about to be written. `errors` are appended to what the run recorded."""

    @field_validator("detail")
    @classmethod
    def _mask_detail(cls, value: str) -> str:
        """Errors often quote a connection URL; its password is never stored (as in runs)."""
        return mask_secrets(value)

    @field_validator("errors")
    @classmethod
    def _mask_errors(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**e, "message": mask_secrets(e["message"])} if isinstance(e.get("message"), str) else e
            for e in value
        ]

    @classmethod
    def capture(
        cls,
        *,
        body: bytes | str | None,
        headers: Any = None,
        properties: Any = None,
        **fields: Any,
    ) -> NewDeadLetter:
        """Keep headers and properties as JSON, and the body as text: whole when the entry
        can be replayed, else its first KEPT_BODY_BYTES (NUL and bad UTF-8 replaced)."""
        raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body or b""
        whole = DeadLetterReason(fields["reason"]).replayable
        kept = raw if whole else raw[:KEPT_BODY_BYTES]
        return cls(
            headers=_jsonable(headers) if isinstance(headers, dict) else {"raw": repr(headers)},
            properties=_jsonable(properties) if isinstance(properties, dict) else {},
            body=kept.decode("utf-8", "replace").replace("\x00", "\ufffd") if body else None,
            body_bytes=len(raw),
            body_truncated=len(kept) < len(raw),
            **fields,
        )


class DeadLetterEntry(_Letter):
    """A stored dead letter, `errors` its whole history. Listings leave `body` out."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    replayed_at: datetime | None = None

    @property
    def replayable(self) -> bool:
        """Pending, holding a whole task message of a reason worth running again."""
        return (
            self.replayed_at is None
            and self.reason.replayable
            and not self.body_truncated
            and self.run_id is not None
            and self.task is not None
        )
