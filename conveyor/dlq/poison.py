"""Screening a broker message before Celery builds a request from it.

Celery defers some checks to code that raises where no hook catches it (a message without an
`id` header, or a body that is not `[args, kwargs, embed]`), and would run a body of any
size. `screen` finds those cases; the consumer dead-letters them instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from kombu.exceptions import ContentDisallowed
from kombu.serialization import loads

from conveyor.dlq.table import DeadLetterReason


class Verdict(NamedTuple):
    """Why a message must not run, in words that name the field and the limit."""

    reason: DeadLetterReason
    detail: str


def screen(message: Any, max_bytes: int) -> Verdict | None:
    """A Verdict for a task message (protocol 2: it has a `task` header) that must not run,
    or None to hand it to Celery. Messages without a `task` header go to Celery, whose hooks
    (on_decode_error, on_unknown_message) handle them."""
    size = len(message.body or b"")
    if size > max_bytes:
        return Verdict(
            DeadLetterReason.TOO_LARGE,
            f"body of {size} bytes is larger than max_message_bytes ({max_bytes}; "
            "CONVEYOR_MAX_MESSAGE_BYTES)",
        )
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return None
    for field in ("task", "id"):
        if not isinstance(headers.get(field), str) or not headers[field]:
            return Verdict(
                DeadLetterReason.MISSING_FIELDS,
                f"header {field!r} must be a non-empty string, got {headers.get(field)!r}",
            )
    try:
        payload = _decoded(message)
    except ContentDisallowed as exc:
        return Verdict(DeadLetterReason.NOT_JSON, f"content type refused: {exc}")
    except Exception as exc:
        return Verdict(
            DeadLetterReason.NOT_JSON,
            f"body is not valid {message.content_type or 'content'}: {exc}",
        )
    return _check_body(payload)


def _check_body(payload: Any) -> Verdict | None:
    """A task body is [args (a list), kwargs (an object), embed (an object)]."""
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        return Verdict(
            DeadLetterReason.MISSING_FIELDS,
            f"body must be [args, kwargs, embed], got {type(payload).__name__}"
            + (f" of {len(payload)} items" if isinstance(payload, list | tuple) else ""),
        )
    for name, value, kind in zip(
        ("args", "kwargs", "embed"), payload, (list | tuple, dict, dict), strict=True
    ):
        if not isinstance(value, kind):
            wanted = "a list" if name == "args" else "an object"
            return Verdict(
                DeadLetterReason.MISSING_FIELDS,
                f"body field {name} must be {wanted}, got {type(value).__name__}",
            )
    return None


def _decoded(message: Any) -> Any:
    """The message's body, decoded as Celery's trace will decode it. Not `message.decode()`,
    which keeps its result on the message: a copy of every waiting run's input for as long
    as it is in flight."""
    return loads(
        message.body, message.content_type, message.content_encoding, accept=message.accept
    )
