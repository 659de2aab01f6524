"""Replica snapshots: restore after a restart, and survive a kill -9 in the middle of a write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from conveyor import Client, ConveyorApp
from conveyor.vector.replica import Replica
from conveyor.vector.snapshot import load_snapshot, write_snapshot
from conveyor.vector.store import Change
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, WorkerProcess


def _replica(count: int, dim: int, seed: int) -> Replica:
    data = np.random.default_rng(seed).normal(size=(count, dim)).astype("<f4")
    replica = Replica("gen", dim, "cosine", "flat")
    replica.apply([Change(id=f"v{i}", seq=i + 1, vector=data[i].tobytes()) for i in range(count)])
    return replica


def test_a_snapshot_round_trips_and_a_damaged_one_is_skipped(tmp_path: Path) -> None:
    first = _replica(500, 8, 1)
    write_snapshot(tmp_path, "c", first)
    second = _replica(600, 8, 2)
    manifest = write_snapshot(tmp_path, "c", second)
    loaded = load_snapshot(tmp_path, "c", "gen")
    assert loaded is not None and (loaded.applied, loaded.size) == (600, 600)
    query = np.ones((1, 8), dtype=np.float32)
    assert loaded.search(query, 5).rows() == second.search(query, 5).rows()
    with manifest.with_suffix(".faiss").open("r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 16)
    fallback = load_snapshot(tmp_path, "c", "gen")
    assert fallback is not None and fallback.applied == 500
    assert load_snapshot(tmp_path, "c", "another generation") is None


WRITER = """
import sys, numpy as np
from pathlib import Path
from conveyor.vector.replica import Replica
from conveyor.vector.snapshot import write_snapshot
from conveyor.vector.store import Change
data = np.random.default_rng(3).normal(size=(400_000, 64)).astype("<f4")
replica = Replica("gen", 64, "l2", "flat")
replica.apply([Change(id=str(i), seq=i + 1, vector=data[i].tobytes()) for i in range(len(data))])
print("ready", flush=True)
sys.stdin.readline()
write_snapshot(Path(sys.argv[1]), "c", replica)
"""


def test_kill_9_during_a_snapshot_leaves_the_previous_one_usable(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "c", _replica(300, 64, 4))
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        writer.stdin.write("go\n")
        writer.stdin.flush()
        folder = tmp_path / "c"
        wait_until(lambda: any(folder.glob(".*.tmp-*")), 30, "the snapshot write to begin")
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(10)
    assert writer.returncode == -signal.SIGKILL
    loaded = load_snapshot(tmp_path, "c", "gen")
    assert loaded is not None and (loaded.applied, loaded.size) == (300, 300)


@pytest.fixture
def snapshot_env(redis_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**redis_env, "CONVEYOR_DATA_DIR": str(tmp_path / "data")}


def test_a_restarted_worker_loads_its_snapshot_and_catches_up(
    redis_app: ConveyorApp, client: Client, snapshot_env: dict[str, str], log_dir: Path
) -> None:
    name = f"snap{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(9)
    data = {f"i{i}": rng.normal(size=8) for i in range(300)}
    worker = WorkerProcess(redis_app, snapshot_env, "vector", log_dir).wait_ready()
    try:
        client.vector.create_collection(name, dim=8, index="hnsw")
        items = [{"id": k, "vector": v.tolist()} for k, v in list(data.items())[:200]]
        client.vector.upsert(name, items)
        snap = client.vector.snapshot(name)
        assert snap.vectors == 200 and Path(snap.path).exists()
        rest = [{"id": k, "vector": v.tolist()} for k, v in list(data.items())[200:]]
        client.vector.upsert(name, rest)
    finally:
        worker.stop()
    restarted = WorkerProcess(redis_app, snapshot_env, "vector", log_dir).wait_ready()
    try:
        wait_until(
            lambda: f"collection {name}: loaded snapshot at seq {snap.seq}" in restarted.output(),
            30,
            "the restarted worker to load the snapshot",
        )
        stats = client.vector.stats(name)
        assert (stats.replica_vectors, stats.replica_seq) == (300, 300)
        query = data["i250"]
        assert client.vector.search(name, [query.tolist()], k=1).results[0][0].id == "i250"
    finally:
        restarted.stop()
