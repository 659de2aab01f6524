"""The headers conveyor adds to a task message, beside Celery's own."""

from __future__ import annotations

HEADER_ENQUEUED_AT = "conveyor_enqueued_at"
"""When the run was published (UTC, ISO 8601): queue age and queue wait."""
HEADER_IDEMPOTENCY_KEY = "conveyor_idempotency_key"
"""The run's idempotency key, which a worker's claim enforces."""
CONVEYOR_HEADERS = (HEADER_ENQUEUED_AT, HEADER_IDEMPOTENCY_KEY)
