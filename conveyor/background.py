"""One background writer thread per process, for writes nobody has to wait for."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from conveyor.forksafe import ProcessLocal

_writer = ProcessLocal(lambda: ThreadPoolExecutor(1, thread_name_prefix="conveyor-writer"))


def background_writer() -> ThreadPoolExecutor:
    """This process's writer thread, created on first use and again after a fork."""
    return _writer.get()
