"""The dead-letter queue: runs and messages a pool gave up on, kept per pool in PostgreSQL
for `conveyor dlq list|show|replay|purge`. Plain Python: no Celery in here."""

from conveyor.dlq.entry import DeadLetterEntry, NewDeadLetter
from conveyor.dlq.store import DeadLetterStore, ReplayOutcome
from conveyor.dlq.table import DeadLetterReason

__all__ = [
    "DeadLetterEntry",
    "DeadLetterReason",
    "DeadLetterStore",
    "NewDeadLetter",
    "ReplayOutcome",
]
