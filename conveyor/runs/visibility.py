"""The Redis visibility timeout and the waits it bounds.

On Redis a message stays in kombu's unacked hash while a worker holds it; once it has been
held longer than the visibility timeout, any worker's periodic sweep puts it back in the
queue and another worker runs it as well. A worker holds a message for its countdown (ETA)
and then for the run, so countdown + hard time limit must stay below the timeout.
"""

from __future__ import annotations

from typing import Any, Protocol

from conveyor.agents import AnyAgent
from conveyor.config import Settings

DEFAULT_VISIBILITY_TIMEOUT = 3600
"""kombu's own, when broker_transport_options set none."""
MARGIN = 1.0
"""Seconds kept free for publishing, polling and clock differences."""


class BrokerSide(Protocol):
    """What the limits read of an app: its broker, transport options and settings."""

    @property
    def uses_redis(self) -> bool: ...

    @property
    def conf(self) -> Any: ...

    @property
    def settings(self) -> Settings: ...


def redelivery_options(visibility_timeout: int) -> dict[str, Any]:
    """Prompt redelivery of the messages a dead worker held: kombu sweeps for messages past
    their visibility timeout every interval x throttle seconds (100 s by default); here every
    tenth of the timeout, 1 to 10 s."""
    return {
        "unacked_restore_interval": max(1, min(10, visibility_timeout // 10)),
        "unacked_restore_throttle": 1,
    }


def countdown_limit(app: BrokerSide, spec: AnyAgent) -> float | None:
    """The longest countdown a run of `spec` may wait at a worker without being handed to a
    second worker; None when the broker has no visibility timeout (RabbitMQ)."""
    if not app.uses_redis:
        return None
    options = app.conf.broker_transport_options or {}
    visibility = float(options.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT))
    _, hard = spec.limits(app.settings.soft_time_limit, app.settings.time_limit)
    return max(0.0, visibility - hard - MARGIN)


def retry_backoff_max(app: BrokerSide, spec: AnyAgent) -> int:
    """The agent's longest retry backoff, lowered where needed to fit the countdown limit."""
    limit = countdown_limit(app, spec)
    return spec.retry_backoff_max if limit is None else min(spec.retry_backoff_max, int(limit))


def check_countdown(app: BrokerSide, spec: AnyAgent, countdown: float) -> None:
    """Refuse a countdown that would make Redis deliver the run twice."""
    if countdown < 0:
        raise ValueError(f"countdown must be 0 or more seconds, got {countdown:g}")
    limit = countdown_limit(app, spec)
    if limit is not None and countdown > limit:
        raise ValueError(
            f"countdown {countdown:g}s is too long for agent {spec.name} on Redis: at most "
            f"{limit:g}s (CONVEYOR_VISIBILITY_TIMEOUT less the agent's hard time limit and "
            f"{MARGIN:g}s), or Redis hands the waiting run to a second worker and it runs twice"
        )
