"""The bulk publisher without a broker: the messages it batches are the ones Celery's own
`send_task` hands kombu's Redis transport, it falls back to `send_task` where it must, and a
batch of queued runs becomes one statement's rows."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from celery.signals import after_task_publish, before_task_publish
from celery.utils.saferepr import saferepr
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Connection, Producer
from kombu.transport.redis import Channel as RedisChannel
from kombu.utils.json import dumps as kombu_dumps

from conveyor.agents import agent
from conveyor.app import ConveyorApp
from conveyor.broker.bulk import (
    MAX_VALUES_PER_PUSH,
    BulkPublisher,
    _pushes,
    flat_saferepr,
    json_writer,
    uuid4_texts,
)
from conveyor.broker.redis_keys import PRIORITY_STEPS
from conveyor.client import Client, _validate_all
from conveyor.errors import InvalidInput
from conveyor.runs.headers import HEADER_ENQUEUED_AT, HEADER_IDEMPOTENCY_KEY
from conveyor.runs.queued import QueuedBatch

SEP = "\x06\x16"


class OfflineChannel(RedisChannel):  # type: ignore[misc]
    """kombu's Redis channel with no server: it is its own client, recording each LPUSH and
    pipeline, and its producer's connection reraises nothing."""

    def __init__(self) -> None:  # kombu's connects; only what publishing reads is set
        self.connection = self
        self.client = self
        self.declared_entities: set[Any] = set()
        self.priority_steps = PRIORITY_STEPS
        self.body_encoding = "utf-8"
        self._expires: dict[str, int] = {}
        self.pushed: list[tuple[str, tuple[str, ...]]] = []
        self.executed = 0

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[OfflineChannel]:
        yield self

    def _reraise_as_library_errors(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def lpush(self, key: str, *values: str) -> None:
        self.pushed.append((key, values))

    def pipeline(self, transaction: bool = True) -> OfflineChannel:
        return self

    def execute(self) -> None:
        self.executed += 1

    def __enter__(self) -> OfflineChannel:
        return self

    def __exit__(self, *_: object) -> None:
        pass


@pytest.fixture
def channel() -> OfflineChannel:
    return OfflineChannel()


def publisher(app: ConveyorApp, channel: Any, **options: Any) -> BulkPublisher:
    producer = Producer(channel, auto_declare=False)
    producer.maybe_declare = lambda entity, *a, **k: channel.declared_entities.add(entity.name)
    return BulkPublisher(app, producer, "conveyor.ping", queue="default", **options)


def comparable(envelope: str) -> dict[str, Any]:
    message = json.loads(envelope)
    message["properties"].pop("delivery_tag")
    message["properties"].pop("timestamp", None)
    message["headers"]["eta"] = bool(message["headers"]["eta"])
    return dict(message)


def runs(count: int) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    kwargs: list[dict[str, Any]] = [{"i": i, "text": f"é'\n{i}", "nested": [{"a": None}]}
                                    for i in range(count)]  # fmt: skip
    headers = [{HEADER_ENQUEUED_AT: "2026-12-07T10:00:00+00:00", HEADER_IDEMPOTENCY_KEY: None}
               for _ in range(count)]  # fmt: skip
    return ids, kwargs, headers


@pytest.mark.parametrize(
    ("priority", "countdown", "ignore_result"),
    [(None, None, False), (0, None, True), (6, 30.0, False)],
)
def test_batched_envelopes_are_what_send_task_hands_the_redis_transport(
    fake_app: ConveyorApp,
    channel: OfflineChannel,
    priority: int | None,
    countdown: float | None,
    ignore_result: bool,
) -> None:
    wire = fake_app.broker_priority(priority) if priority is not None else None
    ids, kwargs, headers = runs(3)
    producer = Producer(channel, auto_declare=False)
    for run_id, task_kwargs, task_headers in zip(ids, kwargs, headers, strict=True):
        fake_app.send_task(
            "conveyor.ping", kwargs=task_kwargs, task_id=run_id, queue="default", priority=wire,
            countdown=countdown, ignore_result=ignore_result, headers=dict(task_headers),
            producer=producer, declare=[], retry=False,
        )  # fmt: skip
    reference = [(key, values[0]) for key, values in channel.pushed]
    bulk = publisher(
        fake_app, channel, priority=wire, countdown=countdown, ignore_result=ignore_result
    )
    assert bulk.batched
    prepared = bulk.build(ids, kwargs, headers)
    assert [key for key, _ in prepared.pushes] == [key for key, _ in reference]
    assert [comparable(e) for _, e in prepared.pushes] == [comparable(e) for _, e in reference]
    assert reference[0][0] == (f"default{SEP}{wire}" if wire else "default")
    assert len({json.loads(e)["properties"]["delivery_tag"] for _, e in prepared.pushes}) == 3


def test_send_pushes_a_batch_in_one_pipeline_in_publish_order(
    fake_app: ConveyorApp, channel: OfflineChannel
) -> None:
    ids, kwargs, headers = runs(5)
    bulk = publisher(fake_app, channel)
    prepared = bulk.build(ids, kwargs, headers)
    assert channel.pushed == [], "building publishes nothing"
    bulk.send(prepared)
    bulk.send(bulk.build(ids[:1], kwargs[:1], headers[:1]))
    assert channel.executed == 2 and channel.declared_entities == {"default"}
    (key, first), (_, second) = channel.pushed
    assert key == "default"
    assert [json.loads(e)["headers"]["id"] for e in (*first, *second)] == [*ids, ids[0]]


def test_signals_fire_for_each_message_and_what_they_change_is_published(
    fake_app: ConveyorApp, channel: OfflineChannel
) -> None:
    """`before_task_publish` as each message is built (a receiver's changes are published),
    `after_task_publish` once the batch is in Redis."""
    seen: list[tuple[str, str]] = []

    def before(headers: dict[str, Any], **_: Any) -> None:
        headers["stamped"] = headers["id"]
        seen.append(("before", headers["id"]))

    def after(headers: dict[str, Any], routing_key: str, **_: Any) -> None:
        seen.append(("after", headers["id"]))
        assert (routing_key, channel.executed) == ("default", 1)

    before_task_publish.connect(before, weak=False)
    after_task_publish.connect(after, weak=False)
    try:
        ids, kwargs, headers = runs(2)
        bulk = publisher(fake_app, channel)
        prepared = bulk.build(ids, kwargs, headers)
        assert seen == [("before", ids[0]), ("before", ids[1])]
        bulk.send(prepared)
    finally:
        before_task_publish.disconnect(before)
        after_task_publish.disconnect(after)
    assert seen[2:] == [("after", ids[0]), ("after", ids[1])]
    messages = [json.loads(e) for _, e in prepared.pushes]
    assert [m["headers"]["stamped"] for m in messages] == ids
    assert all(isinstance(m["properties"]["timestamp"], int) for m in messages), "conveyor's stamp"
    assert all(m["headers"][HEADER_ENQUEUED_AT] for m in messages)


def test_task_sent_events_leave_each_message_to_send_task(
    fake_app: ConveyorApp, channel: OfflineChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_app.conf.task_send_sent_event = True
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(fake_app, "send_task", lambda name, **options: sent.append(options))
    bulk = publisher(fake_app, channel, priority=4, countdown=2.0, ignore_result=True)
    ids, kwargs, headers = runs(2)
    prepared = bulk.build(ids, kwargs, headers)
    assert not bulk.batched and prepared.pushes == [] and len(prepared) == 2
    bulk.send(prepared)
    assert channel.pushed == []
    assert [(s["task_id"], s["kwargs"], s["headers"]) for s in sent] == list(
        zip(ids, kwargs, headers, strict=True)
    )
    assert {(s["queue"], s["priority"], s["countdown"], s["ignore_result"]) for s in sent} == {
        ("default", 4, 2.0, True)
    }


def test_other_transports_are_not_batched(fake_app: ConveyorApp) -> None:
    with Connection("memory://") as conn:
        assert not publisher(fake_app, conn.default_channel).batched


def test_an_expiring_queue_is_not_batched(fake_app: ConveyorApp, channel: OfflineChannel) -> None:
    channel._expires["default"] = 60_000
    assert not publisher(fake_app, channel).batched


def test_pushes_keep_order_one_lpush_per_list_run_and_bounded() -> None:
    pushes = [("a", "1"), ("a", "2"), ("b", "3"), ("a", "4")]
    assert list(_pushes(pushes)) == [("a", ["1", "2"]), ("b", ["3"]), ("a", ["4"])]
    many = [("q", str(i)) for i in range(MAX_VALUES_PER_PUSH + 5)]
    sizes = [len(values) for _, values in _pushes(many)]
    assert sizes == [MAX_VALUES_PER_PUSH, 5]


def test_uuid4_texts_are_random_version_4_uuids() -> None:
    texts = uuid4_texts(2000)
    parsed = [uuid.UUID(t) for t in texts]
    assert [str(u) for u in parsed] == texts
    assert {u.version for u in parsed} == {4} and {u.variant for u in parsed} == {uuid.RFC_4122}
    assert len(set(texts)) == 2000 and uuid4_texts(0) == []
    assert {t[19] for t in texts} == set("89ab")


def test_a_queued_batch_is_one_statements_rows() -> None:
    moment = datetime(2026, 12, 7, tzinfo=UTC)
    batch = QueuedBatch(
        agent="a", pool="default", queue="q", enqueued_at=moment,
        ids=["1", "2", "3"],
        inputs=[{"x": "nul\x00"}, {"when": moment, "amount": Decimal("1.5")}, {}],
        keys=[None, "k\x00", None],
    )  # fmt: skip
    assert batch.keyed and len(batch) == 3
    params = batch.params()
    assert (params["agent"], params["pool"], params["queue"], params["enqueued_at"]) == (
        "a", "default", "q", moment,
    )  # fmt: skip
    rows = json.loads(params["rows"])
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["input"] == {"x": {"$conveyor:nul": "nul\\0"}}, "NUL kept reversibly"
    assert rows[1]["input"] == {"when": "2026-12-07T00:00:00Z", "amount": "1.5"}
    assert [r["idempotency_key"] for r in rows] == [None, "k\ufffd", None]
    assert not QueuedBatch("a", "p", None, moment, ["1"], [{}], [None]).keyed


scalars = st.one_of(
    st.text(), st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.sampled_from(["'", "\\", "it's", "a\\'b", "é\n\t\x00", " " * 40, "x" * 1100]),
)  # fmt: skip
payloads = st.dictionaries(
    st.text(max_size=30),
    st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(), scalars)),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(payloads, st.one_of(st.none(), st.integers(1, 120), st.just(1024)), st.integers(0, 4))
def test_flat_saferepr_writes_what_saferepr_writes(
    kwargs: dict[str, Any], maxlen: int | None, maxlevels: int
) -> None:
    assert flat_saferepr(kwargs, maxlen, maxlevels) == saferepr(kwargs, maxlen, maxlevels=maxlevels)


@pytest.mark.parametrize("maxlen", [1, 9, 16, 33])
def test_flat_saferepr_at_the_length_limit(maxlen: int) -> None:
    for n in range(maxlen + 4):
        for value in ("x" * n, "a b'" * n, 10**n, n * 0.5):
            for kwargs in ({"k": value}, {"key": value, "b": None}):
                expected = saferepr(kwargs, maxlen, maxlevels=3)
                assert flat_saferepr(kwargs, maxlen, 3) == expected, (kwargs, maxlen)


@pytest.mark.parametrize("chunk_size", [0, -5])
def test_a_chunk_size_below_one_is_refused_before_any_io(
    fake_app: ConveyorApp, chunk_size: int
) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        Client(fake_app).submit_many("conveyor.ping", [{}], chunk_size=chunk_size)


def test_validation_of_a_batch_names_its_first_invalid_payload(fake_app: ConveyorApp) -> None:
    spec = fake_app.agents.get("conveyor.ping")
    _validate_all(spec, [{"i": n} for n in range(50)], fake_app.validation_context)

    @agent(name="unit.bulk.add")
    def add(a: int, b: int) -> int:
        return a + b

    items: list[dict[str, Any]] = [{"a": 1, "b": 2}, {"a": "x", "b": 1}, {"b": 3}]
    with pytest.raises(InvalidInput) as caught:
        _validate_all(add, items, fake_app.validation_context)
    assert [e["loc"] for e in caught.value.errors] == [("a",)]


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(),
        st.datetimes(), st.decimals(allow_nan=False), st.uuids(), st.binary(max_size=8),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
    | st.tuples(inner, inner),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=5))
def test_json_writer_writes_what_kombus_dumps_writes(values: list[Any]) -> None:
    write = json_writer()
    assert [write(v) for v in values] == [kombu_dumps(v) for v in values]
