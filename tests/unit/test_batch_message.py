"""A message a batch takes is read as kombu reads it, and screening a message does not keep
a decoded copy of its body on it."""

from __future__ import annotations

import json

from kombu.message import Message
from kombu.utils.json import dumps, loads

from conveyor.broker.transport import _message
from conveyor.dlq.poison import screen


def test_a_message_reads_the_same_as_kombus_json_and_shares_its_keys() -> None:
    item = json.dumps({"body": "e30=", "headers": {"task": "a", "id": "1", "retries": 0},
                       "properties": {"priority": 3, "delivery_tag": "t"}}).encode()  # fmt: skip
    first, second = _message(item), _message(item)
    assert first == loads(item.decode())
    key_first = next(k for k in first["headers"] if k == "task")
    key_second = next(k for k in second["headers"] if k == "task")
    assert key_first is key_second, "the keys' strings are shared between messages"


def test_kombus_type_markers_and_what_orjson_refuses_are_read_by_kombu() -> None:
    from datetime import UTC, datetime

    marked = dumps({"headers": {"eta": datetime(2026, 1, 1, tzinfo=UTC)}}).encode()
    assert _message(marked)["headers"]["eta"] == datetime(2026, 1, 1, tzinfo=UTC)
    big = b'{"headers": {"n": 123456789012345678901234567890, "x": NaN}}'
    assert _message(big)["headers"]["n"] == 123456789012345678901234567890


def test_screening_a_message_keeps_no_decoded_copy_of_its_body_on_it() -> None:
    """A waiting run's message lives as long as the run: a cached decode is its input twice."""
    message = Message(body=b'[[], {"a": 1}, {}]', content_type="application/json",
                      content_encoding="utf-8", headers={"task": "x", "id": "1"})  # fmt: skip
    assert screen(message, 1000) is None
    assert message._decoded_cache is None
