"""The worker's remote control (Celery's pidbox), kept up whatever a control message holds.

Celery logs an error with a traceback for every bad control message and then closes and
reopens the control channel, missing broadcasts meanwhile; a message it cannot decode went
to the consumer's decode hook, which dead-letters task messages. Here an unknown command, a
command that raises, a body that is not a command and an undecodable message are each
answered or dropped as Celery would, logged once per cause as a warning, and the channel is
reset only when the broker connection itself failed.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.worker import pidbox
from kombu.pidbox import Node

from conveyor.broker.once import WarnOnce

log = logging.getLogger(__name__)


class GuardedNode(Node):
    """A pidbox node that turns a bad command into an error reply and one warning."""

    def __init__(self, node: Node, warn: WarnOnce) -> None:
        super().__init__(node.hostname, node.state, node.channel, node.handlers, node.mailbox)
        self.warn = warn

    def handle_message(self, body: Any, message: Any = None) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            self.warn(
                ("not a command", type(body).__name__),
                "ignoring a control message that is not a command (a JSON object with a "
                "'method'): %.200r",
                body,
            )
            return None
        return super().handle_message(body, message)

    def handle(self, method: str, arguments: Any = None) -> Any:
        if method not in (self.handlers or {}):
            self.warn(("unknown", method), "ignoring unknown control command %r", method)
            return {"error": f"unknown control command {method!r}"}
        try:
            return super().handle(method, arguments)
        except Exception as exc:
            self.warn(
                ("failed", method, type(exc).__name__),
                "control command %r failed: %r (arguments %.200r)",
                method,
                exc,
                arguments,
            )
            return {"error": repr(exc)}


class Pidbox(pidbox.Pidbox):
    def __init__(self, c: Any) -> None:
        super().__init__(c)
        self.app = c.app
        self.warn = WarnOnce(log)
        self.node = GuardedNode(self.node, self.warn)
        self.connection_errors = tuple(c.connection_errors) + tuple(c.channel_errors)

    def on_message(self, body: Any, message: Any) -> None:
        self.app.clock.forward()
        try:
            self.node.handle_message(body, message)
        except self.connection_errors as exc:
            log.warning("control channel failed (%r); reopening it", exc)
            self.reset()
        except Exception as exc:
            self.warn(("reply", type(exc).__name__), "could not answer a control command: %r", exc)

    def start(self, c: Any) -> None:
        super().start(c)
        self.consumer.on_decode_error = self.on_decode_error

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self.warn(
            ("decode", message.content_type),
            "ignoring a control message that cannot be decoded (%s): %r",
            message.content_type,
            exc,
        )


class Control(bootsteps.StartStopStep):
    """Celery's remote control step, on the guarded pidbox (green pools keep Celery's)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        green = c.pool is not None and c.pool.is_green
        self.box = pidbox.gPidbox(c) if green else Pidbox(c)
        super().__init__(c, **kwargs)

    def include_if(self, c: Any) -> bool:
        return bool(
            c.app.conf.worker_enable_remote_control and c.conninfo.supports_exchange_type("fanout")
        )

    def start(self, c: Any) -> None:
        self.box.start(c)

    def stop(self, c: Any) -> None:
        self.box.stop(c)

    def shutdown(self, c: Any) -> None:
        self.box.shutdown(c)
