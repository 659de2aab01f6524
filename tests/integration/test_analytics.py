"""Rollups against a Python reference on random runs, idempotent re-runs, late runs, report."""

from __future__ import annotations

import json
import math
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import Engine, create_engine, text

from conveyor import Client
from conveyor.analytics import ReportRequest, build_report, rollup
from conveyor.errors import InvalidInput
from conveyor.models.migrate import upgrade
from tests.support.cli import conveyor
from tests.support.services import scratch_database

BASE = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
FINAL = ("succeeded", "failed", "rejected", "cancelled")
FIELDS = ("runs", *FINAL, "retries", "duration_p50", "duration_p95", "duration_p99", "wait_p50",
          "wait_p95")  # fmt: skip


@pytest.fixture(scope="module")
def engine(pg_admin: str) -> Iterator[Engine]:
    with scratch_database(pg_admin, prefix="conveyor_analytics") as url:
        psycopg_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        upgrade(psycopg_url)
        engine = create_engine(psycopg_url)
        yield engine
        engine.dispose()


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE agent_runs, run_rollups, analytics_watermarks"))


def _insert(engine: Engine, runs: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO agent_runs (id, agent, pool, status, attempts, error_type, "
                "enqueued_at, started_at, finished_at) VALUES (:id, :agent, :pool, :status, "
                ":attempts, :error_type, :enqueued_at, :started_at, :finished_at)"
            ),
            runs,
        )


run_strategy = st.fixed_dictionaries(
    {
        "agent": st.sampled_from(["a.x", "a.y", "b.z"]),
        "pool": st.sampled_from(["default", "memory"]),
        "status": st.sampled_from([*FINAL, "started"]),
        "attempts": st.integers(1, 4),
        "minute": st.integers(0, 150),
        "second": st.floats(0, 59.999),
        "wait": st.floats(0, 30),
        "duration": st.floats(0, 120),
    }
)


def _materialise(drawn: list[dict[str, Any]]) -> list[dict[str, Any]]:
    runs = []
    for d in drawn:
        finished = BASE + timedelta(minutes=d["minute"], seconds=d["second"])
        started = finished - timedelta(seconds=d["duration"])
        final = d["status"] in FINAL
        runs.append(
            {
                "id": uuid.uuid4().hex,
                "agent": d["agent"],
                "pool": d["pool"],
                "status": d["status"],
                "attempts": d["attempts"],
                "error_type": "ValueError" if d["status"] == "failed" else None,
                "enqueued_at": started - timedelta(seconds=d["wait"]),
                "started_at": started,
                "finished_at": finished if final else None,
            }
        )
    return runs


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q * 100, method="linear")) if values else None


def _reference(runs: list[dict[str, Any]], grain: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """What run_rollups must hold, computed in Python from the runs themselves."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if r["status"] not in FINAL:
            continue
        f = r["finished_at"]
        bucket = f.replace(second=0, microsecond=0)
        if grain == "hour":
            bucket = bucket.replace(minute=0)
        groups[(bucket, r["agent"], r["pool"])].append(r)
    out = {}
    for key, rows in groups.items():
        durations = [(r["finished_at"] - r["started_at"]).total_seconds() for r in rows]
        waits = [(r["started_at"] - r["enqueued_at"]).total_seconds() for r in rows]
        out[key] = {
            "runs": len(rows),
            **{s: sum(r["status"] == s for r in rows) for s in FINAL},
            "retries": sum(r["attempts"] - 1 for r in rows),
            "duration_p50": _pct(durations, 0.5),
            "duration_p95": _pct(durations, 0.95),
            "duration_p99": _pct(durations, 0.99),
            "wait_p50": _pct(waits, 0.5),
            "wait_p95": _pct(waits, 0.95),
        }
    return out


def _stored(engine: Engine, grain: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM run_rollups WHERE grain = :g"), {"g": grain}
        ).mappings()
        return {(r["bucket"], r["agent"], r["pool"]): {k: r[k] for k in FIELDS} for r in rows}


def _assert_same(stored: dict[Any, Any], expected: dict[Any, Any]) -> None:
    assert stored.keys() == expected.keys()
    for key, want in expected.items():
        for field, value in want.items():
            got = stored[key][field]
            if isinstance(value, float):
                assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-6), (key, field)
            else:
                assert got == value, (key, field)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=st.lists(run_strategy, min_size=1, max_size=60),
       late=st.lists(run_strategy, min_size=1, max_size=20))  # fmt: skip
def test_rollups_match_a_python_reference_and_reruns_change_nothing(
    engine: Engine, first: list[dict[str, Any]], late: list[dict[str, Any]]
) -> None:
    _reset(engine)
    runs = _materialise(first)
    _insert(engine, runs)
    done = rollup(engine)
    assert done.full
    _assert_same(_stored(engine, "minute"), _reference(runs, "minute"))
    _assert_same(_stored(engine, "hour"), _reference(runs, "hour"))

    again = rollup(engine)
    assert (again.full, again.rows_written) == (False, 0), "re-running changes nothing"

    late_runs = _materialise(late)  # finished in old minutes, recorded only now
    _insert(engine, late_runs)
    incremental = rollup(engine)
    assert not incremental.full
    everything = runs + late_runs
    _assert_same(_stored(engine, "minute"), _reference(everything, "minute"))
    _assert_same(_stored(engine, "hour"), _reference(everything, "hour"))
    assert rollup(engine, full=True).rows_written == 0, "a full rebuild agrees"


def test_a_rollup_over_no_runs_is_not_an_error(engine: Engine) -> None:
    _reset(engine)
    assert rollup(engine).minutes == 0
    assert rollup(engine).rows_written == 0


def test_report_ranks_agents_types_waits_and_slo(engine: Engine) -> None:
    _reset(engine)
    now = datetime.now(UTC)
    specs = [("fast", "succeeded", 0.1)] * 8 + [("slow", "succeeded", 20.0)] * 3
    specs += [("flaky", "failed", 1.0)] * 2 + [("flaky", "succeeded", 1.0)] * 2
    runs = [
        {"id": f"r{i}", "agent": a, "pool": "default", "status": s, "attempts": 1,
         "error_type": "TimeoutError" if s == "failed" else None,
         "enqueued_at": now - timedelta(seconds=60 + d),
         "started_at": now - timedelta(seconds=d + 1),
         "finished_at": now - timedelta(seconds=1)}
        for i, (a, s, d) in enumerate(specs)
    ]  # fmt: skip
    old = {**runs[0], "id": "ancient", "finished_at": now - timedelta(days=2)}
    _insert(engine, [*runs, old])
    report = build_report(
        engine, ReportRequest(), known_agents={"fast", "slow", "flaky"},
        slo_seconds={"slow": 30.0}, slo_default_seconds=0.5,
    )  # fmt: skip
    assert report.runs == len(specs), "the two-day-old run is outside the hour"
    assert report.busiest[0].agent == "fast" and report.slowest[0].agent == "slow"
    assert [a.agent for a in report.most_failing] == ["flaky"]
    assert report.most_failing[0].failure_rate == 0.5
    (failure,) = report.failure_types
    assert (failure.error_type, failure.count, failure.agents) == ("TimeoutError", 2, ["flaky"])
    assert failure.example_run_id in {r["id"] for r in runs if r["status"] == "failed"}
    by_agent = {a.agent: a for a in report.agents}
    assert by_agent["slow"].within_slo == 1.0 and by_agent["flaky"].within_slo == 0.0
    assert by_agent["fast"].within_slo == 1.0 and by_agent["slow"].slo_seconds == 30.0
    assert report.queue_wait[0].pool == "default" and report.queue_wait[0].runs == len(specs)
    only = build_report(
        engine, ReportRequest(agent="slow"), known_agents=set(), slo_seconds={},
        slo_default_seconds=10,
    )  # fmt: skip
    assert [a.agent for a in only.agents] == ["slow"], "an agent that has run is known"


def test_report_refuses_bad_windows_and_unknown_agents(engine: Engine) -> None:
    with pytest.raises(ValidationError, match="since_seconds"):
        ReportRequest(since_seconds=-5)
    with pytest.raises(ValidationError, match="less than or equal to 2678400"):
        ReportRequest(since_seconds=40 * 86400)
    with pytest.raises(InvalidInput, match="agent: unknown agent 'nope'; known: a, b"):
        build_report(
            engine, ReportRequest(agent="nope"), known_agents={"a", "b"}, slo_seconds={},
            slo_default_seconds=1,
        )  # fmt: skip


def test_conveyor_report_prints_json_and_refuses_bad_input(
    redis_env: dict[str, str], client: Client
) -> None:
    for i in range(3):
        client.wait(client.submit("tests.add", {"a": i, "b": 1}), timeout=30)
    done = conveyor(redis_env, "report", "--since", "1h", "--agent", "tests.add", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["agents"][0]["agent"] == "tests.add" and shown["agents"][0]["runs"] >= 3
    table = conveyor(redis_env, "report", "--since", "15m")
    assert table.returncode == 0, table.stderr
    assert "busiest" in table.stdout and "tests.add" in table.stdout
    too_long = conveyor(redis_env, "report", "--since", "40d")
    assert too_long.returncode == 1 and "at most 31d" in too_long.stderr
    unknown = conveyor(redis_env, "report", "--agent", "tests.nope")
    assert unknown.returncode == 1 and "unknown agent 'tests.nope'" in unknown.stderr
    bad = conveyor(redis_env, "report", "--since", "soon")
    assert bad.returncode == 2 and "is not an age like" in bad.stderr
