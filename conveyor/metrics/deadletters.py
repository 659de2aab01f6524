"""conveyor_dlq_size{pool}: pending dead letters per pool, read from PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.config import Settings
from conveyor.dlq.store import DeadLetterStore
from conveyor.models.db import engine_for

log = logging.getLogger(__name__)
DLQ_TTL = 5.0
"""Count at most this often: one grouped count on a partial index, cheap but not free."""


class DeadLetterCollector(Collector):
    """Counts pending entries per pool at most once per `ttl` seconds. Every configured pool
    has a sample (0 when empty), as do pools that only the table still names; when the
    database cannot be read the family is empty and the scrape still succeeds."""

    def __init__(self, settings: Settings, ttl: float = DLQ_TTL) -> None:
        self.settings, self.ttl = settings, ttl
        self._read: tuple[float, dict[str, int] | None] | None = None
        self._lock = threading.Lock()

    def sizes(self) -> dict[str, int] | None:
        with self._lock:
            if self._read is None or time.monotonic() - self._read[0] >= self.ttl:
                self._read = (time.monotonic(), self._fetch())
            return self._read[1]

    def _fetch(self) -> dict[str, int] | None:
        if self.settings.database_url is None:
            return None
        try:
            return DeadLetterStore(engine_for(self.settings.database_url)).sizes()
        except Exception as exc:
            log.debug("dead-letter sizes unavailable: %s", exc)
            return None

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "conveyor_dlq_size",
            "Dead letters not yet replayed (`conveyor dlq list`), per pool.",
            labels=["pool"],
        )
        sizes = self.sizes()
        if sizes is not None:
            for pool in sorted(set(self.settings.pools) | set(sizes)):
                gauge.add_metric([pool], float(sizes.get(pool, 0)))
        yield gauge
