"""A warning logged once per distinct cause, so a bad entry repeated on every broadcast
neither floods the log nor hides a new cause."""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable

MAX_REMEMBERED = 1000


class WarnOnce:
    """Logs each distinct `key` once (the first MAX_REMEMBERED of them, then nothing)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()

    def __call__(self, key: Hashable, message: str, *args: object) -> bool:
        """Log the warning unless `key` was logged before; True when it was logged now."""
        with self._lock:
            if key in self._seen or len(self._seen) >= MAX_REMEMBERED:
                return False
            self._seen.add(key)
        self.logger.warning(message, *args)
        return True
