"""The broker as plain Celery sees it: kombu's default Redis key scheme (and the upgrade
from conveyor's earlier one), RabbitMQ queue arguments, and a control channel that a bad
binding entry or message cannot break."""
