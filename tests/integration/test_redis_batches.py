"""kombu's Redis channel with batches on (an asyncio pool's worker), on a real Redis: the
deliveries a batch takes are marked unacked exactly as kombu marks one, gathered acks are
written once a loop turn, and nothing a batch cannot read is lost or reordered."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.asynchronous import Hub

from conveyor.broker import transport
from conveyor.broker.transport import TAKE_BATCH, RedisTransport, consume_in_batches

N = 60


@pytest.fixture
def batches() -> Iterator[None]:
    consume_in_batches()
    yield
    consume_in_batches(False)


@pytest.fixture
def queue_name() -> str:
    return f"batches-{uuid.uuid4().hex[:8]}"


def _connection(redis_url: str) -> Connection:
    return Connection(redis_url, transport=RedisTransport)


def _publish(redis_url: str, queue: Queue, count: int) -> None:
    with _connection(redis_url) as conn:
        producer = Producer(conn.channel())
        for i in range(count):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue], serializer="json")  # fmt: skip


@contextlib.contextmanager
def _worker_channel(redis_url: str, queue: Queue, prefetch: int) -> Iterator[tuple[Hub, list[Any]]]:
    """A connection registered with an event loop, as a worker's, consuming `queue`; yields
    the loop and the messages received so far. Unacked ones are restored on close."""
    received: list[Any] = []
    hub = Hub()
    with _connection(redis_url) as conn:
        conn.register_with_event_loop(hub)
        conn.default_channel.basic_qos(0, prefetch, False)
        callbacks = [lambda _, message: received.append(message)]
        Consumer(conn.default_channel, [queue], callbacks=callbacks).consume()
        yield hub, received
    hub.close()


def _turns_until(hub: Hub, received: list[Any], count: int) -> int:
    """Loop turns until `count` messages arrived (at most 50)."""
    turns = 0
    while len(received) < count and turns < 50:
        hub.run_once()
        turns += 1
    assert len(received) == count, f"{len(received)} of {count} messages in {turns} turns"
    return turns


def _filled(redis_url: str, queue_name: str, count: int) -> Queue:
    """A queue of its own name holding `count` messages {"i": 0}, {"i": 1}, ..."""
    queue = Queue(queue_name, Exchange(queue_name, "direct"), routing_key=queue_name)
    _publish(redis_url, queue, count)
    return queue


def _unacked(client: redis.Redis, tags: list[str]) -> dict[str, Any]:
    values = client.hmget("unacked", tags)
    return {tag: json.loads(v) for tag, v in zip(tags, values, strict=True) if v is not None}


def test_a_batch_marks_each_delivery_unacked_as_kombu_does_and_acks_go_out_per_loop_turn(
    redis_url: str, queue_name: str, batches: None
) -> None:
    queue = _filled(redis_url, queue_name, N)
    client = redis.Redis.from_url(redis_url)
    with _worker_channel(redis_url, queue, N) as (hub, received):
        turns = _turns_until(hub, received, N)
        assert [m.payload["i"] for m in received] == list(range(N)), "every message, in order"
        assert turns < N / 2, f"{N} deliveries took {turns} loop turns: not batched"
        tags = [m.delivery_tag for m in received]
        unacked = _unacked(client, tags)
        assert set(unacked) == set(tags), "each delivery marked unacked"
        for message in received:
            assert unacked[message.delivery_tag] == [message._raw, queue_name, queue_name]
        assert client.zscore("unacked_index", tags[-1]) is not None
        for message in received[:40]:
            message.ack()
        assert len(_unacked(client, tags)) == N, "gathered, not yet written"
        hub.run_once()
        assert set(_unacked(client, tags)) == set(tags[40:]), "written on the next turn"
        assert client.zscore("unacked_index", tags[0]) is None
    assert client.llen(queue_name) == N - 40, "unacked deliveries restored when closed"


def test_acks_gathered_and_not_yet_written_are_written_when_the_channel_closes(
    redis_url: str, queue_name: str, batches: None
) -> None:
    queue = _filled(redis_url, queue_name, 5)
    client = redis.Redis.from_url(redis_url)
    with _worker_channel(redis_url, queue, 10) as (hub, received):
        _turns_until(hub, received, 5)
        for message in received:
            message.ack()
    assert not _unacked(client, [m.delivery_tag for m in received])
    assert client.llen(queue_name) == 0, "acked: nothing restored"


def test_without_batches_a_worker_channel_takes_one_message_a_turn(
    redis_url: str, queue_name: str
) -> None:
    assert not transport._batches
    queue = _filled(redis_url, queue_name, 3)
    with _worker_channel(redis_url, queue, 10) as (hub, received):
        assert _turns_until(hub, received, 3) >= 3, "kombu's own path: a BRPOP a message"
        for message in received:
            message.ack()


def test_the_batch_script_stops_at_a_message_it_cannot_read_and_puts_it_back_in_order(
    redis_url: str, queue_name: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    info = {"exchange": "x", "routing_key": "rk"}
    good = [
        json.dumps({"body": i, "properties": {"delivery_tag": f"t{i}", "delivery_info": info}})
        for i in range(4)
    ]
    for message in (good[0], good[1], "not json", good[2], good[3]):
        client.lpush(queue_name, message)  # as kombu publishes: LPUSH, consumed by RPOP
    take = client.register_script(TAKE_BATCH)
    taken = take(keys=["unacked_index", "unacked", queue_name], args=[10, 1.0])
    assert [json.loads(m)["body"] for m in taken[1::2]] == [0, 1], "up to the unreadable one"
    assert client.lrange(queue_name, 0, -1) == [good[3].encode(), good[2].encode(), b"not json"]
    assert client.rpop(queue_name) == b"not json", "next, where it was"
    assert json.loads(client.hget("unacked", "t1")) == [json.loads(good[1]), "x", "rk"]
    assert client.hget("unacked", "t2") is None
    client.delete(queue_name)
    client.hdel("unacked", "t0", "t1")
    client.zrem("unacked_index", "t0", "t1")


def test_a_server_that_refuses_the_batch_script_gets_kombus_own_path_and_one_warning(
    redis_url: str,
    queue_name: str,
    batches: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As Redis older than 7 does (no `#!lua` line, no RPOP count): nothing is lost, the
    worker goes on a message a turn."""
    monkeypatch.setattr(transport, "TAKE_BATCH", "#!lua\nreturn redis.call('NOSUCHCOMMAND')")
    queue = _filled(redis_url, queue_name, 5)
    with _worker_channel(redis_url, queue, 10) as (hub, received):
        assert _turns_until(hub, received, 5) >= 5, "a BRPOP a message"
        assert [m.payload["i"] for m in received] == list(range(5))
        for message in received:
            message.ack()
    refusals = [r for r in caplog.records if "batches is off" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("batched", [False, True], ids=["kombu", "batches"])
def test_a_batch_takes_messages_in_the_priority_order_kombus_brpop_does(
    redis_url: str, queue_name: str, batched: bool
) -> None:
    consume_in_batches(batched)
    try:
        queue = Queue(queue_name, Exchange(queue_name, "direct"), routing_key=queue_name)
        with _connection(redis_url) as conn:
            producer = Producer(conn.channel())
            for i, priority in enumerate([9, 0, 6, 3, 9, 0, 3, 6]):
                producer.publish({"i": i}, exchange=queue.exchange, routing_key=queue_name,
                                 declare=[queue], priority=priority)  # fmt: skip
        with _worker_channel(redis_url, queue, 20) as (hub, received):
            _turns_until(hub, received, 8)
            order = [m.payload["i"] for m in received]
            for message in received:
                message.ack()
    finally:
        consume_in_batches(False)
    # kombu's Redis transport: priority 0 first, then 3, 6, 9; in order within one
    assert order == [1, 5, 3, 6, 2, 7, 0, 4]


def test_when_a_delivery_of_a_batch_raises_the_rest_go_back_to_the_head_of_the_queue(
    redis_url: str, queue_name: str, batches: None
) -> None:
    queue = _filled(redis_url, queue_name, 10)
    client = redis.Redis.from_url(redis_url)
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        if body["i"] == 3:
            raise RuntimeError("the consumer failed")
        received.append(message)

    hub = Hub()
    with _connection(redis_url) as conn:
        conn.register_with_event_loop(hub)
        conn.default_channel.basic_qos(0, 20, False)
        Consumer(conn.default_channel, [queue], callbacks=[on_message]).consume()
        with pytest.raises(RuntimeError, match="the consumer failed"):
            for _ in range(50):
                hub.run_once()
        assert [m.payload["i"] for m in received] == [0, 1, 2]
        back = [json.loads(m)["body"] for m in client.lrange(queue_name, 0, -1)]
        assert len(back) == 6, "4 to 9 are back in the queue, not left unacked"
        assert len(_unacked(client, [m.delivery_tag for m in received])) == 3
        for message in received:
            message.ack()
    hub.close()
    assert client.llen(queue_name) == 7, "the one that raised is restored when the channel closes"
