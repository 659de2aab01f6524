"""The demo's summary tables fit the terminal; its JSON keeps every message whole."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from conveyor.cli.common import print_json
from conveyor.demo.stages import Stage, Workload
from conveyor.demo.summary import render, summarise
from conveyor.runs.records import Run
from conveyor.runs.status import RunStatus

MESSAGE = "invalid input for examples.research: " + "; ".join(
    f"field_{i}: String should have at least {i} characters" for i in range(12)
)
STEPS = ["conveyor runs --since 15m       every run, from agent_runs"]


@pytest.fixture
def summary() -> dict[str, Any]:
    now = datetime.now(UTC)
    rejected = Run(
        id=str(uuid.uuid4()),
        agent="examples.research",
        pool="default",
        status=RunStatus.REJECTED,
        error_message=MESSAGE,
        attempts=1,
        enqueued_at=now - timedelta(seconds=1),
        started_at=now - timedelta(seconds=0.5),
        finished_at=now,
    )
    work = Workload(stages=[Stage("malformed", rejected.agent, [rejected], 0.01)])
    return summarise(work, {"default": 1}, startup=1.5)


def rendered(summary: dict[str, Any], width: int | None = None) -> list[str]:
    """The tables as a 200-column console that is not a terminal prints them (the CLI's)."""
    out = io.StringIO()
    render(Console(file=out, width=200, force_terminal=False), summary, STEPS, width)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [60, 100])
def test_tables_wrap_a_long_message_to_the_given_width(summary: dict[str, Any], width: int) -> None:
    lines = rendered(summary, width)
    assert max(len(line) for line in lines) <= width
    assert len(MESSAGE) > width
    assert any("field_11" in line for line in lines), "wrapped, not cut"


def test_the_width_defaults_to_the_terminal_s(
    summary: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "90")
    assert max(len(line) for line in rendered(summary)) <= 90


def test_json_keeps_the_whole_message(
    summary: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    print_json({**summary, "next": STEPS})
    assert json.loads(capsys.readouterr().out)["rejected_errors"] == [MESSAGE]
