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


def test_demo_runs_pings_and_memory_on_the_embedded_default(data_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--runs", "50", "--json"],
        env=_clean_env(data_dir),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (summary["runs"], summary["failures"]) == (50, 0)
    assert summary["memory_items"] == 25
    assert summary["memory_window_items"] >= 1
    assert summary["memory_search_hits"] >= 1
    assert summary["vector_items"] > 100
    assert all(summary["vector_top_hits"].values())
    assert summary["report_runs"] >= 50 and "conveyor.ping" in summary["report_busiest"]
