"""RabbitMQ queues with the arguments conveyor declares, and the re-declaration, messages
kept, of one that exists with others.

RabbitMQ refuses to declare an existing queue with other arguments (PRECONDITION_FAILED)
and closes the channel; Celery then stops the worker with a traceback. conveyor declares
every queue with x-max-priority (QUEUE_MAX_PRIORITY), so a queue made earlier without it (by
a plain client, by hand, or by conveyor before the catch-all queue had priorities) must be
re-declared: its messages move to a holding queue, the queue is deleted and declared anew,
and they move back. Each message is acknowledged only once the broker has confirmed its copy,
so an interruption never loses one (it may copy one twice, which the run's claim absorbs),
and running it again finishes the job.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

import amqp
from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Queue
from pydantic import BaseModel

from conveyor.errors import ConfigError

HOLDING_SUFFIX = ".conveyor-redeclare"
MAX_DELETE_ATTEMPTS = 5
Progress = Callable[[str, int], None]


class QueueArgumentsMismatch(ConfigError):
    """A queue exists on RabbitMQ with other arguments than conveyor declares."""

    def __init__(self, queue: str, reply: str) -> None:
        self.queue = queue
        found = re.search(r"inequivalent arg '([^']+)'", reply)
        self.argument = found.group(1) if found else None
        detail = reply.split(" - ", 1)[-1]
        super().__init__(
            f"RabbitMQ queue {queue!r} exists with other arguments than conveyor declares "
            f"({detail}); run `conveyor broker migrate` to declare it anew with its "
            "messages kept"
        )


class QueueReport(BaseModel):
    """What the migration found, or did, for one queue."""

    queue: str
    status: Literal["ok", "redeclared", "mismatch", "busy"]
    moved: int = 0
    """Messages moved through the holding queue (and back)."""
    detail: str | None = None


def declare(connection: Any, queue: Queue) -> None:
    """Declare `queue` as a worker does, on a channel of its own."""
    channel = connection.channel()
    try:
        queue(channel).declare()
    except PreconditionFailed as exc:
        raise QueueArgumentsMismatch(queue.name, str(exc)) from None
    finally:
        _close(channel)


def check_queues(connection: Any, queues: Iterable[Queue]) -> None:
    """Declare each queue a worker will consume; the first one that exists with other
    arguments raises QueueArgumentsMismatch naming it and the argument."""
    for queue in queues:
        declare(connection, queue)


class QueueRedeclarer:
    """Re-declares conveyor's queues that exist with other arguments, messages kept."""

    def __init__(self, connection: Any, progress: Progress | None = None) -> None:
        self.connection = connection
        self.progress = progress

    def run(self, queue: Queue, *, dry_run: bool = False) -> QueueReport:
        holding = queue.name + HOLDING_SUFFIX
        left_over = self._count(holding)
        try:
            declare(self.connection, queue)
        except QueueArgumentsMismatch as exc:
            if dry_run:
                return QueueReport(queue=queue.name, status="mismatch", detail=str(exc))
            return self._redeclare(queue, holding)
        if left_over is None or dry_run:
            return QueueReport(queue=queue.name, status="ok")
        moved = self._move(holding, queue.name)
        self._delete(holding)
        return QueueReport(queue=queue.name, status="redeclared", moved=moved)

    def _redeclare(self, queue: Queue, holding: str) -> QueueReport:
        consumers = self._consumers(queue.name)
        if consumers:
            return QueueReport(
                queue=queue.name,
                status="busy",
                detail=f"{consumers} consumer(s) still read it with the old arguments; stop "
                "them (workers of the earlier version) and run this again",
            )
        declare(self.connection, self._holding_queue(queue, holding))
        moved = 0
        for _ in range(MAX_DELETE_ATTEMPTS):
            moved += self._move(queue.name, holding)
            if self._delete(queue.name, if_empty=True):
                break
        else:
            return QueueReport(
                queue=queue.name,
                status="busy",
                moved=moved,
                detail="producers keep publishing to it; its messages wait in "
                f"{holding!r}: stop them and run this again",
            )
        declare(self.connection, queue)
        self._move(holding, queue.name)
        self._delete(holding)
        return QueueReport(queue=queue.name, status="redeclared", moved=moved)

    @staticmethod
    def _holding_queue(queue: Queue, holding: str) -> Queue:
        return Queue(
            holding,
            routing_key=holding,
            durable=True,
            queue_arguments=dict(queue.queue_arguments or {}),
        )

    def _move(self, source: str, target: str) -> int:
        """Move every message, each acknowledged only after the broker confirmed its copy."""
        channel = self.connection.channel()
        moved = 0
        try:
            while (message := channel.basic_get(queue=source, no_ack=False)) is not None:
                copy = amqp.Message(message.body, **message.properties)
                channel.basic_publish_confirm(copy, exchange="", routing_key=target)
                channel.basic_ack(message.delivery_tag)
                moved += 1
                if self.progress and moved % 1000 == 0:
                    self.progress(source, moved)
        finally:
            _close(channel)
        return moved

    def _count(self, name: str) -> int | None:
        """Messages in the queue, or None when it does not exist."""
        found = self._passive(name)
        return None if found is None else int(found.message_count)

    def _consumers(self, name: str) -> int:
        found = self._passive(name)
        return 0 if found is None else int(found.consumer_count)

    def _passive(self, name: str) -> Any:
        channel = self.connection.channel()
        try:
            return channel.queue_declare(queue=name, passive=True)
        except NotFound:
            return None
        finally:
            _close(channel)

    def _delete(self, name: str, *, if_empty: bool = False) -> bool:
        """Delete the queue; False when `if_empty` and a message arrived meanwhile."""
        channel = self.connection.channel()
        try:
            channel.queue_delete(queue=name, if_unused=True, if_empty=if_empty)
            return True
        except PreconditionFailed:
            return False
        finally:
            _close(channel)


def _close(channel: Any) -> None:
    """Close a channel, which the broker may have closed already."""
    with contextlib.suppress(Exception):
        channel.close()
