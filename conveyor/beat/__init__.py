"""Periodic work: `conveyor beat`, its schedules, and the single-leader lock.

`DEFAULT_SCHEDULE` says what runs and how often; `LeaderLock` (a PostgreSQL advisory lock)
makes one of any number of beat processes the leader; `LeaderScheduler` is Celery beat's
scheduler, sending only while its process leads.
"""

from conveyor.beat.leader import LeaderLock, leader_name
from conveyor.beat.schedule import DEFAULT_SCHEDULE, beat_schedule

__all__ = ["DEFAULT_SCHEDULE", "LeaderLock", "beat_schedule", "leader_name"]
