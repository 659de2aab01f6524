"""A consumer step that moves messages left under conveyor's earlier Redis key scheme into
the lists this worker reads: once at start, then every CONVEYOR_LEGACY_SWEEP_SECONDS, because
during a rolling upgrade producers that are not yet upgraded keep publishing under the old
one."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from conveyor.broker.redis_keys import RedisKeyUpgrade
from conveyor.celery_app import ConveyorApp

log = logging.getLogger(__name__)


class LegacyKeySweep(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.connection:Connection",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.connection: Any = None
        self.timer: Any = None
        super().__init__(c, **kwargs)

    def include_if(self, c: Any) -> bool:
        app: ConveyorApp = c.app
        return bool(app.uses_redis)

    def start(self, c: Any) -> None:
        self.connection = c.app.connection_for_write()
        self.sweep(c, bindings=True)
        interval = c.app.settings.legacy_sweep_seconds
        self.timer = c.timer.call_repeatedly(interval, self.sweep, (c,))

    def sweep(self, c: Any, bindings: bool = False) -> None:
        """Move the legacy lists of every queue the app declares, not only this pool's, so
        that a pool scaled to zero still gets its backlog counted and scaled on."""
        try:
            upgrade = RedisKeyUpgrade(self.connection.default_channel)
            upgrade.run(list(c.app.amqp.queues), bindings=bindings)
        except Exception as exc:
            log.warning("could not move messages left under the legacy key scheme: %r", exc)

    def stop(self, c: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connection is not None:
            self.connection.release()
            self.connection = None
