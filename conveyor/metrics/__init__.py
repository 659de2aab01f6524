"""Queue depth, worker and task metrics, and the scaling decision built on them.

`QueueReader` reads queue state straight from the broker; `desired_replicas` turns it into a
replica count per pool; `Exporter` serves both to Prometheus and KEDA; `TaskEvents` feeds the
task series from Celery events.
"""

from __future__ import annotations

from conveyor.metrics.events import TaskEvents
from conveyor.metrics.exporter import Exporter, PoolView, scale_document, serve
from conveyor.metrics.queues import QueueReader, QueueState
from conveyor.metrics.scaling import ScaleDecision, ScaleInputs, desired_replicas

__all__ = [
    "Exporter",
    "PoolView",
    "QueueReader",
    "QueueState",
    "ScaleDecision",
    "ScaleInputs",
    "TaskEvents",
    "desired_replicas",
    "scale_document",
    "serve",
]
