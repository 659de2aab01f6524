"""The dead-letter queue's pure logic: screening messages, capturing them, settings, and the
`conveyor dlq` arguments refused before any app is built."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from kombu import Message

from conveyor.cli import cli
from conveyor.config import load_settings
from conveyor.dlq.entry import KEPT_BODY_BYTES, DeadLetterEntry, NewDeadLetter, error_entry
from conveyor.dlq.poison import screen
from conveyor.dlq.table import REPLAYABLE, DeadLetterReason
from conveyor.errors import ConfigError, ConveyorError

LIMIT = 10_000
TASK = {"task": "tests.add", "id": "r-1"}


def message(
    body: Any = ([], {"a": 1}, {}),
    headers: Any = None,
    content_type: str = "application/json",
) -> Message:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Message(
        body=raw,
        headers=TASK if headers is None else headers,
        content_type=content_type,
        content_encoding="utf-8",
        accept=["application/json"],
    )


def test_a_well_formed_task_message_passes() -> None:
    assert screen(message(), LIMIT) is None


def test_a_message_without_a_task_header_is_left_to_celery() -> None:
    assert screen(message(b"{not json", headers={}), LIMIT) is None


def test_a_body_over_the_limit_is_too_large_whatever_else_it_is() -> None:
    verdict = screen(message(b"x" * (LIMIT + 1), headers={}), LIMIT)
    assert verdict is not None and verdict.reason is DeadLetterReason.TOO_LARGE
    assert f"{LIMIT + 1} bytes" in verdict.detail and f"({LIMIT};" in verdict.detail
    assert "CONVEYOR_MAX_MESSAGE_BYTES" in verdict.detail
    assert screen(message(b"[[], {}, {}]" + b" " * (LIMIT - 12)), LIMIT) is None


@pytest.mark.parametrize(
    ("headers", "field"),
    [({"task": "tests.add"}, "id"), ({"task": "", "id": "r"}, "task"), ({"task": 3}, "task")],
)
def test_missing_or_empty_headers_are_named(headers: dict[str, Any], field: str) -> None:
    verdict = screen(message(headers=headers), LIMIT)
    assert verdict is not None and verdict.reason is DeadLetterReason.MISSING_FIELDS
    assert f"header '{field}'" in verdict.detail


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"{not json", "application/json", "not valid application/json"),
        (b"\x80\x04K\x01.", "application/x-python-serialize", "content type refused"),
        (b"hello", "text/plain", "content type refused"),
    ],
)
def test_bodies_that_are_not_json_are_refused(body: bytes, content_type: str, words: str) -> None:
    verdict = screen(message(body, content_type=content_type), LIMIT)
    assert verdict is not None and verdict.reason is DeadLetterReason.NOT_JSON
    assert words in verdict.detail


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"args": []}, "must be [args, kwargs, embed], got dict"),
        ([[], {}], "got list of 2 items"),
        (["x", {}, {}], "args must be a list, got str"),
        ([[], [], {}], "kwargs must be an object, got list"),
        ([[], {}, None], "embed must be an object, got NoneType"),
    ],
)
def test_bodies_of_the_wrong_shape_name_the_field(body: Any, words: str) -> None:
    verdict = screen(message(body), LIMIT)
    assert verdict is not None and verdict.reason is DeadLetterReason.MISSING_FIELDS
    assert words in verdict.detail


def test_capture_keeps_a_replayable_body_whole_and_caps_the_others() -> None:
    body = b"[" + b" " * (2 * KEPT_BODY_BYTES) + b"[], {}, {}]"
    whole = NewDeadLetter.capture(
        body=body, pool="default", reason=DeadLetterReason.RETRIES_EXHAUSTED, detail="d"
    )
    assert whole.body == body.decode() and not whole.body_truncated
    capped = NewDeadLetter.capture(
        body=body, pool="default", reason=DeadLetterReason.TOO_LARGE, detail="d"
    )
    assert capped.body is not None and len(capped.body) == KEPT_BODY_BYTES
    assert capped.body_truncated and capped.body_bytes == len(body)


def test_capture_makes_any_message_storable() -> None:
    letter = NewDeadLetter.capture(
        body=b"a\x00b\xff",
        headers={"when": datetime(2026, 1, 1, tzinfo=UTC), "raw": b"x"},
        properties="not a dict",
        pool="default",
        reason=DeadLetterReason.NOT_JSON,
        detail="d",
    )
    assert letter.body == "a\ufffdb\ufffd"
    assert letter.headers == {"when": "2026-01-01 00:00:00+00:00", "raw": "b'x'"}
    assert letter.properties == {}
    assert NewDeadLetter.capture(
        body=None, headers=None, pool="p", reason=DeadLetterReason.MISSING_FIELDS, detail="d"
    ).headers == {"raw": "None"}


@pytest.mark.parametrize("reason", list(DeadLetterReason))
def test_only_whole_task_messages_of_some_reasons_are_replayable(
    reason: DeadLetterReason,
) -> None:
    fields: dict[str, Any] = {
        "id": 1,
        "pool": "default",
        "reason": reason,
        "detail": "d",
        "run_id": "r",
        "task": "t",
        "created_at": datetime.now(UTC),
    }
    entry = DeadLetterEntry(**fields)
    assert entry.replayable is (reason in REPLAYABLE)
    if reason in REPLAYABLE:
        assert not DeadLetterEntry(**fields, body_truncated=True).replayable
        assert not DeadLetterEntry(**fields, replayed_at=datetime.now(UTC)).replayable
        assert not DeadLetterEntry(**{**fields, "run_id": None}).replayable


def test_dead_letter_settings_have_defaults_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.max_deliveries, settings.max_message_bytes) == (3, 32 * 1024 * 1024)
    monkeypatch.setenv("CONVEYOR_MAX_DELIVERIES", "0")
    with pytest.raises(ConfigError, match="CONVEYOR_MAX_DELIVERIES"):
        load_settings()
    monkeypatch.setenv("CONVEYOR_MAX_DELIVERIES", "5")
    monkeypatch.setenv("CONVEYOR_MAX_MESSAGE_BYTES", "10")
    with pytest.raises(ConfigError, match="CONVEYOR_MAX_MESSAGE_BYTES"):
        load_settings()


@pytest.mark.parametrize(
    "args",
    [
        ("replay",),
        ("replay", "1", "--pool", "default"),
        ("replay", "--pool", "default", "--all"),
        ("purge",),
        ("purge", "1", "--all"),
        ("purge", "--all", "--older-than", "1d"),
        ("purge", "--older-than", "yesterday"),
        ("show", "abc"),
        ("list", "--limit", "0"),
    ],
)
def test_dlq_refuses_bad_arguments_before_building_the_app(
    args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse() -> None:
        raise ConveyorError("unit: the app was built")

    monkeypatch.setattr("conveyor.cli.common.build_app", refuse)
    result = CliRunner().invoke(cli, ["dlq", *args])
    assert result.exit_code == 2, result.output
    assert "unit: the app was built" not in result.output


def test_passwords_in_errors_are_never_stored() -> None:
    letter = NewDeadLetter(
        pool="default",
        reason=DeadLetterReason.RETRIES_EXHAUSTED,
        detail="OperationalError: redis://u:s3cretpass@h:6379/0 refused",
        errors=[error_entry(1, "E", "postgresql://a:hunter2pw@db/x is down", "w")],
    )
    assert "s3cretpass" not in letter.detail and "redis://u:" in letter.detail
    assert "hunter2pw" not in letter.errors[0]["message"]
    assert letter.errors[0]["attempt"] == 1 and letter.errors[0]["worker"] == "w"
