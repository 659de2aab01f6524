"""The no-config default: embedded PostgreSQL and Redis, `conveyor up`, and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.embedded import Embedded, _alive
from tests.support.waiting import wait_until
from tests.support.workers import ROOT


def _clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return {**env, "CONVEYOR_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "c"


def test_embedded_services_are_reused_and_a_stale_state_is_detected(data_dir: Path) -> None:
    embedded = Embedded(data_dir)
    try:
        first = embedded.ensure()
        assert embedded.ensure() == first
        os.kill(first.redis_pid, signal.SIGKILL)
        wait_until(lambda: not _running(first.redis_pid), 10, "the killed Redis to exit")
        assert embedded.read_state() is None
        second = embedded.ensure()
        assert second.redis_pid != first.redis_pid
        assert second.postgres_pid == first.postgres_pid
    finally:
        assert embedded.stop() is True
    assert not _alive(first.postgres_pid)
    assert not embedded.state_file.exists()


def test_up_submit_runs_and_a_clean_stop(data_dir: Path) -> None:
    env = _clean_env(data_dir)
    up = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "up"],
        env=env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stderr is not None
        seen = []
        for line in up.stderr:
            seen.append(line)
            if line.startswith("conveyor up:"):
                break
        else:
            pytest.fail("conveyor up never became ready:\n" + "".join(seen[-30:]))
        submitted = subprocess.run(
            [sys.executable, "-m", "conveyor", "submit", "conveyor.ping", '{"x": 1}', "--wait"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads(submitted.stdout)["echo"] == {"x": 1}
        listed = subprocess.run(
            [sys.executable, "-m", "conveyor", "runs", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        runs = json.loads(listed.stdout)
        assert [(r["agent"], r["status"]) for r in runs] == [("conveyor.ping", "succeeded")]
        state = json.loads((data_dir / "embedded.json").read_text())
        tree = _descendants(up.pid) | {state["postgres_pid"], state["redis_pid"]}
        assert len(tree) >= 6
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(120)
    assert code == 0
    assert not [pid for pid in tree if _running(pid)]
    assert not (data_dir / "embedded.json").exists()


def test_demo_runs_the_example_workload_on_the_embedded_default(data_dir: Path) -> None:
    """`conveyor demo --size small --json`, end to end, from a fresh data directory.

    The example agents are found through the `conveyor.agents` entry point (`examples`), as
    a user's plugin would be; nothing here names their module. No library warning reaches
    the user, even where XDG_RUNTIME_DIR is unset (platformdirs warns about it).
    """
    env = _clean_env(data_dir)
    env.pop("PYTHONPATH")
    env.pop("XDG_RUNTIME_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--size", "small", "--json"],
        env=env,
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stdout + done.stderr, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["size"] == "small"
    assert summary["failures"] == 0, summary["failure_examples"]
    assert list(summary["stages"]) == [
        "ingest", "research", "recall", "fetch", "flaky", "malformed", "report",
    ]  # fmt: skip
    agents = summary["agents"]
    assert agents["memory.recall"]["succeeded"] == 1
    for name in ("examples.ingest", "examples.research", "examples.fetch", "examples.flaky"):
        assert agents[name]["succeeded"] >= 1, name
        assert 0 < agents[name]["latency_ms_p50"] <= agents[name]["latency_ms_p99"], name
    assert summary["documents"] > 100
    assert summary["questions"] >= 10
    assert summary["recall"] >= 0.7
    assert summary["remembered"] >= summary["questions"]
    assert summary["retries"] >= 1 and agents["examples.flaky"]["retries"] >= 1
    assert summary["rejected"] == 1
    assert "question" in summary["rejected_errors"][0]
    assert set(summary["refused_at_submit"]) == {"question", "collection", "k"}
    assert summary["fetch_concurrency"] > 2
    assert set(summary["peak_queue_depth"]) == {"default", "memory", "vector", "analytics", "io"}
    assert summary["io_peak_in_flight"] > 1
    report = summary["report"]
    assert report["runs"] >= summary["runs"] and "examples.research" in report["busiest"]
    assert report["failure_types"] == {"InvalidInput": 1}
    assert summary["throughput_per_s"] > 0
    assert any(step.startswith("conveyor runs") for step in summary["next"])
