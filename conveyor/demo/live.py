"""The demo's live display: one progress row per stage, and the queue depth of every pool.

The depth is read with `conveyor.metrics.QueueReader`, the same numbers the exporter serves
(ready + reserved per pool, summed over the pool's queues).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from conveyor.celery_app import ConveyorApp
from conveyor.metrics import QueueReader


class StageBar:
    """Counters of one stage, mirrored in its progress row."""

    def __init__(self, progress: Progress, name: str, total: int) -> None:
        self.progress, self.total = progress, total
        self.started = time.perf_counter()
        self.task: TaskID = progress.add_task(name, total=total, submitted=0, rate="")

    def submitted(self, n: int) -> None:
        self.progress.update(
            self.task, submitted=self.progress.tasks[self.task].fields["submitted"] + n
        )

    def finished(self, n: int) -> None:
        self.progress.advance(self.task, n)
        done = self.progress.tasks[self.task].completed
        rate = done / max(time.perf_counter() - self.started, 1e-6)
        self.progress.update(self.task, rate=f"{rate:,.1f} runs/s")


class Live:
    """Progress rows plus a queue-depth row refreshed twice a second in the background."""

    def __init__(self, app: ConveyorApp, console: Console, visible: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("submitted {task.fields[submitted]:>5}"),
            TextColumn("{task.fields[rate]}"),
            console=console,
            disable=not visible,
        )
        self.reader = QueueReader(app, ttl=0.25)
        self.pools = sorted(app.settings.pools)
        self.peak: dict[str, int] = dict.fromkeys(self.pools, 0)
        self.depth_row = self.progress.add_task("queues", total=None, submitted="-", rate="")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="demo-queues", daemon=True)

    def __enter__(self) -> Live:
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        self.progress.stop()
        self.reader.close()

    def stage(self, name: str, total: int) -> StageBar:
        return StageBar(self.progress, name, total)

    def depth(self) -> dict[str, int]:
        """Ready + reserved messages per pool, now."""
        depth = dict.fromkeys(self.pools, 0)
        for q in self.reader.read(fresh=True):
            depth[q.pool] = depth.get(q.pool, 0) + q.ready + q.reserved
        return depth

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                depth = self.depth()
            except Exception as exc:  # the display must never break the demo
                self.progress.update(self.depth_row, description=f"queues: {exc}")
            else:
                for pool, n in depth.items():
                    self.peak[pool] = max(self.peak.get(pool, 0), n)
                shown = "  ".join(f"{p} {n}" for p, n in depth.items())
                self.progress.update(self.depth_row, rate=f"depth: {shown}")
            self._stop.wait(0.5)
