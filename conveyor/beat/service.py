"""Running `conveyor beat`: Celery's beat service with the leader-aware scheduler."""

from __future__ import annotations

import logging
import signal
from typing import Any

from celery.beat import Service

from conveyor.beat.scheduler import LeaderScheduler
from conveyor.celery_app import ConveyorApp
from conveyor.workers.boot import wait_for_database

log = logging.getLogger(__name__)


def run_beat(app: ConveyorApp) -> None:
    """Run until SIGINT or SIGTERM; on the way out a leader gives the lock up at once."""
    assert app.settings.database_url is not None
    wait_for_database(app.settings.database_url)
    retry: Any = app.settings.beat_lock_retry_seconds
    service = Service(app, max_interval=retry, scheduler_cls=LeaderScheduler)

    def stop(signum: int, _: Any) -> None:
        service.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    log.info("beat: %s", service.scheduler.info)
    service.start()
