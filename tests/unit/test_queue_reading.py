"""The pure parts of queue reading (conveyor/metrics/queues.py): enqueue stamps, first-seen
ages, the read script's arguments, unacked messages split into reserved and delayed, and the
reader's cache. tests/integration/test_metrics.py reads real brokers; mutation testing
(benchmarks/mutation.py, issue 17) found these edges unguarded.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conveyor.metrics import queues
from conveyor.metrics.queues import FirstSeen, QueueReader, QueueState, enqueue_time, epoch
from tests.unit.support import FAKE_AMQP, FAKE_BROKER, build_app


def test_epoch_reads_numbers_and_iso_strings_and_nothing_else() -> None:
    assert epoch(12) == 12.0 and isinstance(epoch(12), float)
    assert epoch(1.5) == 1.5
    assert (
        epoch("2026-01-02T03:04:05+00:00") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    )
    assert epoch("soon") is None
    assert epoch(None) is None and epoch(["2026-01-02"]) is None


def test_first_seen_keeps_the_first_sight_and_forgets_the_oldest_at_its_limit() -> None:
    seen = FirstSeen(limit=2)
    assert seen.stamp("a", 10.0) == 10.0
    assert seen.stamp("a", 20.0) == 10.0, "a message is aged from when it was first seen"
    assert seen.stamp("b", 30.0) == 30.0
    assert seen.stamp("c", 40.0) == 40.0
    assert seen.stamp("a", 50.0) == 50.0, "the oldest sighting made room for c"
    assert seen.stamp("c", 60.0) == 40.0
    for n in range(10):
        seen.stamp(f"m{n}", 70.0)
        seen.stamp("c", 80.0)
        assert len(seen._seen) <= seen.limit, "a bounded memory of sightings"
    assert FirstSeen().limit == 10_000


def test_enqueue_time_reads_the_header_or_ages_a_message_without_one() -> None:
    seen = FirstSeen()
    assert enqueue_time(None, seen, 5.0) is None and enqueue_time(b"", seen, 5.0) is None
    assert enqueue_time(b"id:", seen, 5.0) is None, "no id, nothing to age"
    assert enqueue_time(b"id:m1", seen, 5.0) == 5.0
    assert enqueue_time(b"id:m1", seen, 9.0) == 5.0
    assert enqueue_time(b"id:m2", seen, 9.0) == 9.0, "each message its own first sight"
    stamp = "2026-01-02T03:04:05+00:00"
    assert enqueue_time(stamp.encode(), seen, 9.0) == epoch(stamp)
    assert enqueue_time(b"garbage", seen, 9.0) is None


def test_the_read_script_gets_every_step_and_both_separators() -> None:
    channel = SimpleNamespace(priority_steps=[0, 3, 12], sep="\x06\x16", global_keyprefix="gp:")
    args = queues.read_script_args(channel, ["q1", "q2"])
    assert args[0] == "gp:"
    assert json.loads(args[1]) == [*range(10), 12]
    assert json.loads(args[2]) == sorted(["\x06\x16", ":"])
    assert args[3:] == ["q1", "q2"]


def _unacked(routing_key: str, eta: Any = None) -> bytes:
    headers = {} if eta is None else {"eta": eta}
    return json.dumps([{"headers": headers}, "", routing_key]).encode()


def test_unacked_messages_split_into_reserved_and_delayed_by_their_eta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(tmp_path, monkeypatch)
    reader = queues.RedisQueues(app)
    queue = next(q for q in app.conf.task_queues if q.name != "celery")
    now = time.time()
    entries = [
        _unacked(queue.routing_key),
        _unacked(queue.routing_key, now + 600),
        _unacked(queue.routing_key, now + 600),
        _unacked(queue.routing_key, now - 5),  # due: it runs now, it is reserved
        _unacked("elsewhere", datetime.fromtimestamp(now + 600, UTC).isoformat()),
        b"not json",
        json.dumps(["only", "two"]).encode(),
        json.dumps(["no headers dict", "", queue.routing_key]).encode(),
    ]
    reserved, delayed = reader._unacked(entries, now)
    assert reserved == {queue.name: 2}
    assert delayed == {queue.name: 2, "elsewhere": 1}


class CountingSource:
    def __init__(self) -> None:
        self.reads = 0

    def read(self) -> list[QueueState]:
        self.reads += 1
        return []

    def close(self) -> None:
        self.reads = -1


@pytest.mark.parametrize(
    ("broker", "kind"),
    [(FAKE_BROKER, queues.RedisQueues), (FAKE_AMQP, queues.AmqpQueues)],
)
def test_the_reader_picks_its_broker_and_caches_for_its_ttl(
    broker: str, kind: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(tmp_path, monkeypatch, broker_url=broker)
    reader = QueueReader(app, ttl=3600)
    assert isinstance(reader.source, kind)
    source = CountingSource()
    reader.source = source  # type: ignore[assignment]
    assert reader.read() == [] and reader.read() == [] and source.reads == 1
    assert reader.read(fresh=True) == [] and source.reads == 2
    uncached = QueueReader(app, ttl=0)
    uncached.source = source  # type: ignore[assignment]
    uncached.read()
    uncached.read()
    assert source.reads == 4
    reader.close()
    assert source.reads == -1


def test_a_cached_state_is_read_again_once_exactly_its_ttl_has_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(queues.time, "monotonic", lambda: clock[0])
    reader = QueueReader(build_app(tmp_path, monkeypatch), ttl=5)
    source = CountingSource()
    reader.source = source  # type: ignore[assignment]
    reader.read()
    clock[0] = 104.9
    reader.read()
    assert source.reads == 1
    clock[0] = 105.0
    reader.read()
    assert source.reads == 2
