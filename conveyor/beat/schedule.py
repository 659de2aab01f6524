"""What `conveyor beat` sends, and how often: defaults, settings, then celeryconfig.py."""

from __future__ import annotations

import difflib
from datetime import timedelta
from typing import Any

from conveyor.celery_app import ConveyorApp
from conveyor.errors import ConfigError

DEFAULT_SCHEDULE: dict[str, float] = {
    "analytics.rollup": 60,
    "memory.sweep": 300,
    "vector.maintain": 600,
    "analytics.retention": 3600,
}
"""Seconds between runs of each built-in periodic agent; every one accepts `{}` as input."""


def _unknown(where: str, kind: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"invalid {where}: unknown {kind} {name!r}{hint}")


def beat_schedule(app: ConveyorApp) -> dict[str, dict[str, Any]]:
    """Celery `beat_schedule` entries, merged entry by entry: conveyor's defaults, then
    CONVEYOR_BEAT_SCHEDULE (seconds; 0 or null disables), then celeryconfig.py's
    `beat_schedule` (Celery entries; `None` removes one)."""
    given = app.settings.beat_schedule
    seconds = {**DEFAULT_SCHEDULE, **given}
    for name in seconds:
        if name not in app.agents and (name in given or seconds[name]):
            where = "setting CONVEYOR_BEAT_SCHEDULE" if name in given else "default schedule"
            raise _unknown(where, "agent", name, app.agents.names())
    entries: dict[str, dict[str, Any]] = {
        name: {"task": name, "schedule": timedelta(seconds=every), "kwargs": {}}
        for name, every in seconds.items()
        if every
    }
    for name, entry in (app.conf.beat_schedule or {}).items():
        where = f"celeryconfig beat_schedule entry {name!r}"
        if entry is None:
            entries.pop(name, None)
            continue
        if not isinstance(entry, dict) or not {"task", "schedule"} <= set(entry):
            raise ConfigError(f"invalid {where}: give a dict with 'task' and 'schedule'")
        if entry["task"] not in app.tasks:
            raise _unknown(where, "task", str(entry["task"]), sorted(app.tasks))
        entries[name] = dict(entry)
    return entries


def describe(entries: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(entry, task, every) rows for printing a schedule."""
    rows = []
    for name, entry in sorted(entries.items()):
        every = entry["schedule"]
        text = f"{every.total_seconds():g}s" if isinstance(every, timedelta) else str(every)
        rows.append((name, str(entry["task"]), text))
    return rows
