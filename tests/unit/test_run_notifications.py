"""The run notifications' framing (conveyor.runs.notify): what the RECORD statement sends,
read back by Notifications. tests/integration/test_run_storage.py sends them for real."""

from __future__ import annotations

import json

from conveyor.runs.notify import (
    NOTIFY_CHUNK_CHARS,
    NOTIFY_FRAMES,
    ROW_PREFIX,
    Notifications,
    ended,
)
from conveyor.runs.statements import RECORD
from conveyor.runs.status import RunStatus


def row(run_id: str, status: str = "succeeded", output: object = None) -> str:
    """A row as row_to_json renders it: the id first."""
    return json.dumps(
        {"id": run_id, "agent": "a", "pool": "default", "status": status, "output": output},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def parts(run_id: str, text: str) -> list[str]:
    """The framing RECORD applies to a row too large for one notification."""
    chunks = [text[i : i + NOTIFY_CHUNK_CHARS] for i in range(0, len(text), NOTIFY_CHUNK_CHARS)]
    return [f"~{run_id} {n} {len(chunks)} {c}" for n, c in enumerate(chunks, 1)]


def test_the_record_statement_frames_with_these_notifications() -> None:
    assert NOTIFY_FRAMES in RECORD.text
    assert row("x").startswith(ROW_PREFIX)
    assert ended("r1", RunStatus.CANCELLED) == "r1 cancelled"


def test_a_whole_row_of_a_wanted_run_that_ended_is_read() -> None:
    notes = Notifications()
    found = notes.read(row("r1", output=3), {"r1"}.__contains__)
    assert found is not None and found[0] == "r1"
    assert found[1] is not None and found[1].output == 3
    assert notes.read(row("r2"), {"r1"}.__contains__) is None, "nobody waits for r2"
    assert notes.read(row("r1", status="started"), {"r1"}.__contains__) is None


def test_a_short_note_says_a_run_ended_without_its_row() -> None:
    notes = Notifications()
    assert notes.read("r1 failed", {"r1"}.__contains__) == ("r1", None)
    assert notes.read("r1 retrying", {"r1"}.__contains__) is None


def test_parts_are_joined_in_order_and_a_gap_drops_the_row() -> None:
    big = row("r1", output="é" * (3 * NOTIFY_CHUNK_CHARS))
    framed = parts("r1", big)
    assert len(framed) == 4
    notes = Notifications()
    results = [notes.read(p, {"r1"}.__contains__) for p in framed]
    assert results[:-1] == [None] * 3
    last = results[-1]
    assert (
        last is not None and last[1] is not None and last[1].output == "é" * 3 * NOTIFY_CHUNK_CHARS
    )

    notes = Notifications()
    assert [notes.read(p, {"r1"}.__contains__) for p in framed[:1] + framed[2:]] == [None] * 3
    assert [notes.read(p, {"r2"}.__contains__) for p in framed] == [None] * 4, "not waited for"
