"""The `conveyor` command against real services, as a user would run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor import Client
from conveyor.models.migrate import head_revision
from tests.support.cli import conveyor
from tests.support.services import scratch_database


def test_submit_wait_prints_the_echo_and_runs_lists_it(
    redis_env: dict[str, str], client: Client
) -> None:
    done = conveyor(redis_env, "submit", "conveyor.ping", '{"x": 1}', "--wait", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "succeeded" and run["output"]["echo"] == {"x": 1}
    assert run["output"]["run_id"] == run["id"], "current_run().id inside the agent"
    listed = conveyor(
        redis_env,
        "runs",
        "--agent",
        "conveyor.ping",
        "--status",
        "succeeded",
        "--since",
        "10m",
        "--limit",
        "500",
        "--json",
    )
    assert listed.returncode == 0, listed.stderr
    assert run["id"] in [r["id"] for r in json.loads(listed.stdout)]
    table = conveyor(redis_env, "runs", "--limit", "5")
    assert run["id"] in table.stdout and "succeeded" in table.stdout


def test_submit_wait_human_output_is_the_agent_output(
    redis_env: dict[str, str], client: Client
) -> None:
    done = conveyor(redis_env, "submit", "tests.add", '{"a": 20, "b": 22}', "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"


def test_submit_of_a_failing_run_exits_non_zero(redis_env: dict[str, str], client: Client) -> None:
    done = conveyor(redis_env, "submit", "tests.boom", '{"message": "kaput"}', "--wait")
    assert done.returncode == 1
    assert "failed: kaput" in done.stderr


def test_unknown_agent_names_close_matches(redis_env: dict[str, str]) -> None:
    done = conveyor(redis_env, "submit", "conveyor.pign", "{}")
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "conveyor: unknown agent 'conveyor.pign'; did you mean conveyor.ping?"
    )


def test_invalid_payload_names_the_field(redis_env: dict[str, str]) -> None:
    done = conveyor(redis_env, "submit", "tests.add", '{"a": 1}')
    assert done.returncode == 1
    assert "b: Field required" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_status_reports_queues_workers_and_failures(
    redis_env: dict[str, str], client: Client
) -> None:
    client.wait(client.submit("tests.boom", {"message": "for status"}), timeout=30)
    done = conveyor(redis_env, "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    prefix = redis_env["CONVEYOR_QUEUE_PREFIX"]
    assert {f"{prefix}default", f"{prefix}memory", "celery"} <= {
        q["queue"] for q in status["queues"]
    }
    assert any(n.startswith("default.") for n in status["workers"]["default"])
    assert any(f["error_message"] == "for status" for f in status["recent_failures"])


def test_broker_unreachable_is_one_line_and_non_zero(redis_env: dict[str, str]) -> None:
    env = {**redis_env, "CONVEYOR_BROKER_URL": "redis://127.0.0.1:1/0"}
    done = conveyor(env, "submit", "conveyor.ping", "{}", timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("conveyor: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_database_unreachable_is_one_line_and_non_zero(redis_env: dict[str, str]) -> None:
    env = {**redis_env, "CONVEYOR_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    done = conveyor(env, "runs")
    assert done.returncode == 1
    assert done.stderr.startswith("conveyor: database unreachable")
    assert len(done.stderr.strip().splitlines()) == 1


def test_invalid_setting_stops_start_up_with_one_line(redis_env: dict[str, str]) -> None:
    done = conveyor({**redis_env, "CONVEYOR_POOLS": '{"gpu": {"concurrency": 0}}'}, "status")
    assert done.returncode == 1
    assert done.stderr.strip().startswith(
        "conveyor: invalid setting CONVEYOR_POOLS (gpu, concurrency)"
    )


def test_visibility_timeout_below_a_time_limit_refuses_to_start(redis_env: dict[str, str]) -> None:
    done = conveyor({**redis_env, "CONVEYOR_VISIBILITY_TIMEOUT": "200"}, "worker")
    assert done.returncode == 1
    assert "CONVEYOR_VISIBILITY_TIMEOUT" in done.stderr and "runs twice" in done.stderr


def test_worker_refuses_an_unmigrated_database(
    pg_admin: str, redis_env: dict[str, str], tmp_path: Path
) -> None:
    with scratch_database(pg_admin, "conveyor_empty") as empty:
        done = conveyor(
            {**redis_env, "CONVEYOR_DATABASE_URL": empty}, "worker", "--pool", "default"
        )
        assert done.returncode == 1
        assert "run `conveyor db upgrade`" in done.stderr
        submitted = conveyor(
            {**redis_env, "CONVEYOR_DATABASE_URL": empty}, "submit", "conveyor.ping", "{}"
        )
        assert submitted.returncode == 1
        (line,) = submitted.stderr.strip().splitlines()
        assert line.startswith("conveyor: database ") and line.endswith("`conveyor db upgrade`")
        upgraded = conveyor(
            {**redis_env, "CONVEYOR_DATABASE_URL": empty}, "db", "upgrade", "--json"
        )
        assert json.loads(upgraded.stdout) == {"from": None, "to": head_revision()}
        current = conveyor({**redis_env, "CONVEYOR_DATABASE_URL": empty}, "db", "current", "--json")
        assert json.loads(current.stdout)["up_to_date"] is True


@pytest.mark.parametrize(
    "args", [["submit", "conveyor.ping", "{bad"], ["worker", "--pool", "nope"]]
)
def test_bad_arguments_fail_fast(redis_env: dict[str, str], args: list[str]) -> None:
    done = conveyor(redis_env, *args)
    assert done.returncode in (1, 2)
    assert done.stderr.strip()
