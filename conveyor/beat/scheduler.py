"""Celery beat's scheduler, sending only while this process holds the leader lock."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, cast

import kombu
from celery.beat import ScheduleEntry, Scheduler

from conveyor.beat.leader import LeaderLock, entry_row, leader_name
from conveyor.beat.schedule import beat_schedule
from conveyor.celery_app import ConveyorApp

log = logging.getLogger(__name__)


class LeaderScheduler(Scheduler):
    """A standby only retries the lock; the leader renews it every tick, and fences each
    dispatch by recording the entry in `beat_leader` while it still holds the lock.

    State lives in PostgreSQL (when each entry was last sent), not in a local file, so a new
    leader picks up the old one's cadence: an entry fires one interval after it last fired
    under any leader, or at once if that is already past.
    """

    def __init__(self, app: Any, *args: Any, lock: LeaderLock | None = None, **kwargs: Any):
        conveyor = cast(ConveyorApp, app)
        settings = conveyor.settings
        self.retry = settings.beat_lock_retry_seconds
        assert settings.database_url is not None
        self.lock = lock or LeaderLock(settings.database_url, leader_name(settings))
        self._standing_by = False
        kwargs["max_interval"] = min(kwargs.get("max_interval") or self.retry, self.retry)
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        """conveyor's merged schedule only (no celery.backend_cleanup: the Redis and rpc://
        result backends expire results themselves)."""
        self.update_from_dict(beat_schedule(cast(ConveyorApp, self.app)))

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.lock.leading and not (self.lock.acquire() and self._elected()):
            if not self._standing_by:
                self._standing_by = True
                log.info("beat: %s standing by, retrying every %gs", self.lock.holder, self.retry)
            return self.retry
        self._standing_by = False
        if not self.lock.mark():
            return self.retry
        return float(min(super().tick(*args, **kwargs), self.retry))

    def _elected(self) -> bool:
        """Continue each entry from when any leader last sent it; False if that is unknown."""
        rows = {entry_row(self.lock.name, name): entry for name, entry in self.schedule.items()}
        ages = self.lock.ages(list(rows))
        if ages is None:
            return False
        now = self.app.now()
        for row, age in ages.items():
            rows[row].last_run_at = now - timedelta(seconds=age)
        self.populate_heap()
        log.warning("beat: %s leads (lock %s)", self.lock.holder, self.lock.name)
        return True

    def apply_entry(self, entry: ScheduleEntry, producer: kombu.Producer | None = None) -> Any:
        assert entry.name is not None
        if not self.lock.mark(entry_row(self.lock.name, entry.name)):
            log.warning("beat: not sending %s: no longer the leader", entry.name)
            return None
        return super().apply_entry(entry, producer=producer)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.lock.release()

    @property
    def info(self) -> str:
        return f"leader lock {self.lock.name!r} as {self.lock.holder}, retry {self.retry:g}s"
