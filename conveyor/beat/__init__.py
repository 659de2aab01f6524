"""Periodic work for Celery beat: schedules and the single-leader lock (see issue 6)."""
