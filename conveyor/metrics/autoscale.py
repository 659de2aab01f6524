"""A local autoscaler: KEDA/HPA semantics applied to `conveyor worker` processes per pool.

Every polling interval it reads the broker once and computes each pool's desired replicas
with the exporter's formula (an AverageValue target of 1, so the HPA wants exactly that
number). Scale-out is immediate; scale-in takes the highest recommendation of the
stabilisation window, like the HPA's scaleDown.stabilizationWindowSeconds, and removes the
newest worker by SIGTERM: a warm shutdown, so running tasks finish or return to the queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from conveyor.celery_app import ConveyorApp
from conveyor.metrics.queues import QueueReader
from conveyor.metrics.scaling import ScaleDecision, desired_replicas
from conveyor.workers.supervisor import stop_processes, worker_command, worker_env

log = logging.getLogger(__name__)


class ScaleEvent(BaseModel):
    """One change the autoscaler made, as `conveyor autoscale --json` prints it."""

    at: float
    pool: str
    action: str
    """scale-out, scale-in, or exited (a worker that stopped, with its exit code)."""
    replicas: int
    desired: int
    recommended: int
    ready: int
    reserved: int
    oldest_age_seconds: float
    exit_code: int | None = None


@dataclass
class PoolWorkers:
    """The worker processes of one pool: running ones, and ones draining after SIGTERM."""

    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    draining: list[subprocess.Popen[bytes]] = field(default_factory=list)
    history: deque[tuple[float, int]] = field(default_factory=deque)


class LocalAutoscaler:
    def __init__(
        self,
        app: ConveyorApp,
        pools: list[str],
        *,
        interval: float = 15.0,
        scale_down_window: float = 300.0,
        loglevel: str = "WARNING",
        log_dir: str | None = None,
        on_event: Callable[[ScaleEvent], None] = lambda e: None,
    ) -> None:
        self.app, self.pools = app, pools
        self.interval, self.window = interval, scale_down_window
        self.loglevel, self.log_dir, self.on_event = loglevel, log_dir, on_event
        self.reader = QueueReader(app, ttl=0)
        self.workers = {p: PoolWorkers() for p in pools}

    def _launch(self, pool: str) -> subprocess.Popen[bytes]:
        node = f"{pool}.as{uuid.uuid4().hex[:6]}@%h"
        out = None
        if self.log_dir is not None:
            os.makedirs(self.log_dir, exist_ok=True)
            out = open(os.path.join(self.log_dir, f"autoscale-{pool}.log"), "ab")  # noqa: SIM115
        return subprocess.Popen(
            worker_command(pool, node, self.loglevel),
            env=worker_env(self.app),
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )

    def recommend(self, pool: str, decision: ScaleDecision, now: float) -> int:
        """The replica count to run now: the decision, held up by the scale-down window."""
        history = self.workers[pool].history
        history.append((now, decision.desired_replicas))
        while history and history[0][0] < now - self.window:
            history.popleft()
        return max(n for _, n in history)

    def tick(self, now: float | None = None) -> list[ScaleEvent]:
        """One polling interval: reap exited workers, read the broker, scale every pool."""
        now = time.time() if now is None else now
        events = self._reap(now)
        states = self.reader.read(fresh=True)
        for name in self.pools:
            group = self.workers[name]
            decision = desired_replicas(self.app.settings.pool(name), states, len(group.running))
            target = self.recommend(name, decision, now)
            if action := self.scale_to(name, target):
                events.append(self._event(now, name, action, decision, target))
        for event in events:
            self.on_event(event)
        return events

    def scale_to(self, pool: str, replicas: int) -> str:
        """Start workers, or SIGTERM the newest ones (a warm shutdown: running tasks finish or
        go back to the queue), until `replicas` run; returns the action taken, if any."""
        group, action = self.workers[pool], ""
        while len(group.running) < replicas:
            group.running.append(self._launch(pool))
            action = "scale-out"
        while len(group.running) > replicas:
            proc = group.running.pop()
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            group.draining.append(proc)
            action = "scale-in"
        return action

    def _event(
        self,
        now: float,
        pool: str,
        action: str,
        d: ScaleDecision,
        target: int,
        code: int | None = None,
    ) -> ScaleEvent:
        return ScaleEvent(
            at=now,
            pool=pool,
            action=action,
            replicas=len(self.workers[pool].running),
            desired=d.desired_replicas,
            recommended=target,
            ready=d.inputs.ready,
            reserved=d.inputs.reserved,
            oldest_age_seconds=round(d.inputs.oldest_age_seconds, 3),
        )

    def _reap(self, now: float) -> list[ScaleEvent]:
        """Forget workers that exited: drained ones, and running ones that died."""
        events = []
        for pool, group in self.workers.items():
            for bucket in (group.draining, group.running):
                for proc in [p for p in bucket if p.poll() is not None]:
                    bucket.remove(proc)
                    events.append(
                        ScaleEvent(
                            at=now, pool=pool, action="exited", replicas=len(group.running),
                            desired=0, recommended=0, ready=0, reserved=0,
                            oldest_age_seconds=0.0, exit_code=proc.returncode,
                        )
                    )  # fmt: skip
        return events

    def run(self, stop: threading.Event) -> None:
        """Scale every interval until `stop` is set, then stop every worker warmly."""
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception as exc:
                    log.warning("autoscale: %s; trying again next interval", exc)
                stop.wait(self.interval)
        finally:
            self.shutdown(grace=self.app.settings.time_limit + 5)

    def shutdown(self, grace: float) -> None:
        """SIGTERM every worker (warm shutdown), SIGKILL what is left after `grace`."""
        stop_processes((p for g in self.workers.values() for p in (*g.running, *g.draining)), grace)
        for group in self.workers.values():
            group.running.clear()
            group.draining.clear()
        self.reader.close()
