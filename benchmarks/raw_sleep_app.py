"""benchmarks/raw_app.py's raw Celery app plus `raw.sleep`, a task that blocks in
time.sleep(seconds): the wait of a synchronous agent, for the threads and prefork peers of
the asyncio pool (benchmarks/concurrency.py). Configured by the same RAW_* variables:

    python -m celery -A benchmarks.raw_sleep_app worker --pool threads --concurrency 512
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

from benchmarks.raw_app import app

SLEEP_TASK = "raw.sleep"


def sleep(seconds: float = 0.0, **kwargs: Any) -> dict[str, Any]:
    """Block the worker slot for `seconds`, then return the other keyword arguments."""
    time.sleep(seconds)
    return kwargs


def register(celery_app: Celery) -> Any:
    """Declare raw.sleep on `celery_app` (the worker's app here, a client's in the driver)."""
    return celery_app.task(name=SLEEP_TASK, shared=False)(sleep)


register(app)
