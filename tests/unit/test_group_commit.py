"""The asyncio pool's group commit: a writer thread writes what queued up while it was busy
in one batch, every caller learns its own result or its batch's error, and a run waiting on
the loop is woken with it (conveyor.runs.group_commit, conveyor.workers.handover)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest
from sqlalchemy.util import greenlet_spawn

from conveyor.group_commit import WriterThread
from conveyor.workers.handover import wait_on_loop


class Gated:
    """A write function whose first call waits for `gate`; it keeps every batch."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.gate, self.entered = threading.Event(), threading.Event()
        self.batches: list[list[int]] = []
        self.fail = fail or set()

    def write(self, items: list[int]) -> list[int]:
        if not self.batches:
            self.entered.set()
            assert self.gate.wait(10)
        self.batches.append(items)
        if self.fail & set(items):
            raise ValueError(f"bad batch {items}")
        return [i * 10 for i in items]


def test_items_queued_during_a_write_go_in_one_batch_each_with_its_result() -> None:
    writes = Gated()
    writer = WriterThread("test-writer", writes.write)
    first = writer.submit(1)
    assert writes.entered.wait(10)
    rest = [writer.submit(i) for i in range(2, 7)]
    assert not any(f.done() for f in [first, *rest]), "nothing resolves before its write"
    writes.gate.set()
    assert [f.result(10) for f in [first, *rest]] == [10, 20, 30, 40, 50, 60]
    assert writes.batches == [[1], [2, 3, 4, 5, 6]]


def test_a_batch_holds_at_most_max_batch_items() -> None:
    writes = Gated()
    writer = WriterThread("test-writer", writes.write, max_batch=2)
    futures = [writer.submit(1)]
    assert writes.entered.wait(10)
    futures += [writer.submit(i) for i in range(2, 7)]
    writes.gate.set()
    for f in futures:
        f.result(10)
    assert writes.batches == [[1], [2, 3], [4, 5], [6]]


def test_an_error_reaches_every_item_of_its_batch_and_only_those() -> None:
    writes = Gated(fail={3})
    writer = WriterThread("test-writer", writes.write)
    first = writer.submit(1)
    assert writes.entered.wait(10)
    second, third = writer.submit(2), writer.submit(3)
    writes.gate.set()
    assert first.result(10) == 10
    for f in (second, third):
        with pytest.raises(ValueError, match="bad batch"):
            f.result(10)
    assert writer.submit(4).result(10) == 40, "the writer goes on after a failed batch"


def test_on_start_runs_on_the_writer_thread_before_its_first_write() -> None:
    seen: list[str] = []
    writer = WriterThread(
        "test-start",
        lambda items: items,
        on_start=lambda: seen.append(threading.current_thread().name),
    )
    assert writer.submit(1).result(10) == 1
    assert seen == ["test-start"]


def test_runs_waiting_on_the_loop_wake_with_their_own_result_or_error() -> None:
    async def main() -> list[object]:
        futures: list[Future[int]] = [Future() for _ in range(50)]

        def waiter(f: Future[int]) -> object:
            try:
                return wait_on_loop(f)
            except KeyError as exc:
                return exc

        waiting = [asyncio.ensure_future(greenlet_spawn(waiter, f)) for f in futures]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiting), "they wait without blocking the loop"

        def resolve() -> None:
            for i, f in enumerate(futures):
                f.set_exception(KeyError(i)) if i % 7 == 0 else f.set_result(i)

        threading.Thread(target=resolve).start()
        return list(await asyncio.gather(*waiting))

    results = asyncio.run(main())
    for i, result in enumerate(results):
        if i % 7 == 0:
            assert isinstance(result, KeyError) and result.args == (i,)
        else:
            assert result == i
