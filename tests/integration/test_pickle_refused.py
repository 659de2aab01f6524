"""A pickle payload sent straight to a worker's queue is never unpickled.

The body is a real exploit: unpickling it creates a marker file. The worker accepts JSON
only, so the message is dead-lettered on its content type, the file never appears, the run
never executes and the worker keeps serving. (check_config's refusal of pickle in the
settings is in tests/unit/test_celery_config.py.)
"""

from __future__ import annotations

import pickle  # the attacker's side of the test: it builds the hostile payload
import uuid
from pathlib import Path

import redis

from conveyor import Client, RunStatus
from conveyor.dlq import DeadLetterReason
from tests.support.messages import publish_raw, task_message
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

TIMEOUT = 60
PICKLE = "application/x-python-serialize"


class CreatesMarker:
    """Unpickling this opens (creates) `path`: what a hostile pickle does with a shell."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_a_pickle_payload_is_refused_and_never_unpickled(
    client: Client, redis_workers: dict[str, WorkerProcess], redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / f"unpickled-{uuid.uuid4().hex}"
    key = f"pickle:{uuid.uuid4()}"
    run_id, headers, _ = task_message(client.app, "tests.effect", key=key)
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(CreatesMarker(control)))  # the control: this payload is live
    assert control.exists()
    payload = pickle.dumps(CreatesMarker(marker))
    publish_raw(client.app, payload, headers, PICKLE, content_encoding="binary")

    def refused() -> list[str]:
        found = client.app.dead_letters.find(pool="default", limit=500, replayed=True)
        return [e.detail for e in found if e.run_id == run_id]

    wait_until(lambda: bool(refused()), TIMEOUT, "the pickle message to be refused")
    [detail] = refused()
    assert "pickle" in detail
    [entry] = [
        e
        for e in client.app.dead_letters.find(pool="default", limit=500, replayed=True)
        if e.run_id == run_id
    ]
    assert entry.reason is DeadLetterReason.NOT_JSON

    worker = redis_workers["default"]
    assert worker.proc.poll() is None, worker.output()
    after = client.wait(client.submit("tests.add", {"a": 1, "b": 1}), timeout=TIMEOUT)
    assert after.status is RunStatus.SUCCEEDED
    assert not marker.exists()
    assert client.get(run_id) is None
    broker = redis.Redis.from_url(redis_url.replace("redis+socket://", "unix://"))
    try:
        assert broker.get(key) is None
        assert not any(run_id.encode() in v for v in broker.hvals("unacked"))
    finally:
        broker.close()
