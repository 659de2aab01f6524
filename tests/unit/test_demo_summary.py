"""The demo's summary tables fit the terminal; its JSON keeps every message whole; the io
pool's peak of runs in flight comes from the runs' own start and end."""

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
from conveyor.demo.summary import peak_in_flight, render, summarise
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


@pytest.mark.parametrize(
    ("spans", "peak"),
    [
        ([], 0),
        ([(0.0, 10.0), (1.0, 2.0), (3.0, 4.0), (3.5, 5.0)], 3),
        ([(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)], 1),
        ([(5.0, 6.0)] * 4, 4),
    ],
    ids=["none", "nested", "end-to-end", "identical"],
)
def test_peak_in_flight_counts_spans_open_at_one_moment(
    spans: list[tuple[float, float]], peak: int
) -> None:
    assert peak_in_flight(spans) == peak


def _run(pool: str, start: float | None, end: float | None) -> Run:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = {
        key: t0 + timedelta(seconds=value)
        for key, value in (("started_at", start), ("finished_at", end))
        if value is not None
    }
    return Run(
        id=str(uuid.uuid4()),
        agent="examples.fetch",
        pool=pool,
        status=RunStatus.SUCCEEDED if end is not None else RunStatus.STARTED,
        attempts=1,
        enqueued_at=t0,
        **at,
    )


def test_the_summary_reports_the_io_pool_s_peak_from_its_own_runs() -> None:
    io = [_run("io", 0, 5), _run("io", 1, 3), _run("io", 2, 4), _run("io", 2, None)]
    other = [_run("default", 1, 4), _run("default", 2, 4)]
    work = Workload(stages=[Stage("fetch", "examples.fetch", io + other, 5.0)])
    summary = summarise(work, {"io": 0}, startup=1.0)
    assert summary["io_peak_in_flight"] == 3
    assert any("3 runs in flight at once" in line for line in rendered(summary))
