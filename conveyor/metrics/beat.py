"""conveyor_beat_leader_age_seconds: how long ago the beat leader last renewed its row."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text

from conveyor.beat.leader import leader_name
from conveyor.config import Settings
from conveyor.models.db import engine_for

log = logging.getLogger(__name__)
_AGE = text(
    "SELECT extract(epoch FROM now() - renewed_at)::float8 FROM beat_leader WHERE name = :name"
)
_TIMEOUT = text("SET LOCAL statement_timeout = 1000")
BEAT_TTL = 5.0
"""Read the leader row at most this often: its alert waits 120 s, and a scrape stays cheap."""


class BeatCollector(Collector):
    """Reads the leader row at most once per `ttl` seconds. The gauge is absent when there
    is no row (beat never ran) or the database cannot be read; errors never fail a scrape."""

    def __init__(self, settings: Settings, ttl: float = 1.0) -> None:
        self.url, self.name, self.ttl = settings.database_url, leader_name(settings), ttl
        self._read: tuple[float, float | None] | None = None
        self._lock = threading.Lock()

    def age(self) -> float | None:
        with self._lock:
            if self._read is None or time.monotonic() - self._read[0] >= self.ttl:
                self._read = (time.monotonic(), self._fetch())
            return self._read[1]

    def _fetch(self) -> float | None:
        if self.url is None:
            return None
        try:
            with engine_for(self.url).begin() as conn:
                conn.execute(_TIMEOUT)
                age = conn.execute(_AGE, {"name": self.name}).scalar()
        except Exception as exc:
            log.debug("beat leader age unavailable: %s", exc)
            return None
        return None if age is None else max(0.0, float(age))

    def collect(self) -> Iterable[Metric]:
        """The family always; its one sample only when the age is known."""
        gauge = GaugeMetricFamily(
            "conveyor_beat_leader_age_seconds",
            "Seconds since the `conveyor beat` leader last renewed its lock row.",
        )
        age = self.age()
        if age is not None:
            gauge.add_metric([], age)
        yield gauge
