"""Passwords never reach a log: a logging filter that masks them in every record.

Service URLs carry credentials (`redis://:pw@host`, `postgresql://user:pw@host/db`,
`amqp://user:pw@host//`). Celery masks its own banner; this masks everything else a library
or a traceback might print, the way Celery does (`:**@`).
"""

from __future__ import annotations

import logging
import re

from celery.signals import after_setup_logger, after_setup_task_logger

MASK = "**"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?=@)")
_DSN_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'[^']*'|\S+)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """`text` with the password of every URL and libpq `password=` replaced by **."""
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
    return _DSN_PASSWORD.sub(rf"\g<head>{MASK}", text)


class RedactSecrets(logging.Filter):
    """Masks passwords in a record's message, arguments and traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of `logger` (the root logger by default): a handler
    filter sees the records of all loggers, a logger filter only its own."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())


def _redact_celery_logs(logger: logging.Logger, **_: object) -> None:
    """Workers and beat: Celery has just set up its handlers; filter them too."""
    install_redaction(logger)
    install_redaction()


def redact_celery_logs() -> None:
    """Filter the handlers Celery sets up from now on (workers, beat); idempotent."""
    for signal in (after_setup_logger, after_setup_task_logger):
        signal.connect(_redact_celery_logs, weak=False, dispatch_uid="conveyor.redaction")
