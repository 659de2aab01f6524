"""One background writer thread per process, for writes nobody has to wait for."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_writer: ThreadPoolExecutor | None = None
_writer_pid = 0
_lock = threading.Lock()


def background_writer() -> ThreadPoolExecutor:
    """This process's writer thread, created on first use and again after a fork."""
    global _writer, _writer_pid
    with _lock:
        if _writer is None or _writer_pid != os.getpid():
            _writer = ThreadPoolExecutor(1, thread_name_prefix="conveyor-writer")
            _writer_pid = os.getpid()
        return _writer
