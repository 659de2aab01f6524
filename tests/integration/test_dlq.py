"""The dead-letter queue end to end: real workers on Redis, runs and raw poison messages,
and `conveyor dlq` as a user runs it."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from sqlalchemy import text

from conveyor import Client, ConveyorApp, RunStatus
from conveyor.cli import cli
from conveyor.dlq import DeadLetterEntry, DeadLetterReason, NewDeadLetter, ReplayOutcome
from conveyor.metrics.exporter import Exporter
from conveyor.runs.records import NewRun, Outcome
from tests.integration.conftest import make_app, service_env
from tests.support.cli import conveyor
from tests.support.messages import publish_raw
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

TIMEOUT = 60


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url.replace("redis+socket://", "unix://"))
    yield client
    client.close()


def entry_of(app: ConveyorApp, run_id: str) -> DeadLetterEntry | None:
    found = [e for e in app.dead_letters.find(limit=500, replayed=True) if e.run_id == run_id]
    return app.dead_letters.get(found[0].id) if found else None


def await_entry(app: ConveyorApp, run_id: str) -> DeadLetterEntry:
    wait_until(lambda: entry_of(app, run_id) is not None, TIMEOUT, f"a dead letter of {run_id}")
    entry = entry_of(app, run_id)
    assert entry is not None
    return entry


def run_errors(app: ConveyorApp, run_id: str) -> list[dict[str, Any]]:
    """agent_runs.errors, the run's error history (Run does not carry it)."""
    with app.runs.engine.connect() as conn:
        query = text("SELECT errors FROM agent_runs WHERE id = :id")
        return list(conn.execute(query, {"id": run_id}).scalar() or [])


def assert_worker_alive(client: Client, worker: WorkerProcess) -> None:
    """The worker process still runs and still consumes: a fresh run succeeds on it."""
    assert worker.proc.poll() is None, worker.output()
    replies = client.app.control.ping(destination=[worker.node], timeout=5) or []
    assert any(worker.node in r for r in replies), replies
    run = client.wait(client.submit("tests.add", {"a": 20, "b": 22}), timeout=TIMEOUT)
    assert (run.status, run.worker) == (RunStatus.SUCCEEDED, worker.node)


def dlq(app: ConveyorApp, *args: str) -> Result:
    """`conveyor dlq ...` in this process with the test's app: the subprocess runs of
    tests.support.cli cost ~1.5 s each, so only the replay test uses them."""
    return CliRunner().invoke(cli, ["dlq", *args], obj=app)


def test_a_run_that_exhausts_its_retries_is_dead_lettered_with_its_history(
    client: Client,
) -> None:
    key = f"flaky:{uuid.uuid4()}"
    run = client.wait(client.submit("tests.flaky", {"key": key, "fail_times": 10}), timeout=60)
    assert (run.status, run.attempts) == (RunStatus.FAILED, 4)
    entry = await_entry(client.app, run.id)
    assert entry.reason is DeadLetterReason.RETRIES_EXHAUSTED
    assert (entry.pool, entry.task, entry.queue) == ("default", "tests.flaky", run.queue)
    assert [e["attempt"] for e in entry.errors] == [1, 2, 3, 4]
    assert [e["status"] for e in entry.errors] == ["retrying"] * 3 + ["failed"]
    assert [e["message"] for e in entry.errors[:3]] == [f"transient failure {n}" for n in (1, 2, 3)]
    assert entry.errors[-1]["type"] == "TransientError"
    args, kwargs, _ = json.loads(entry.body or "")
    assert (args, kwargs) == ([], {"key": key, "fail_times": 10})
    assert entry.replayable


def test_a_non_retryable_failure_is_not_dead_lettered(client: Client) -> None:
    run = client.wait(client.submit("tests.boom", {"message": "bad"}), timeout=TIMEOUT)
    assert run.status is RunStatus.FAILED
    assert entry_of(client.app, run.id) is None


def test_a_run_that_kills_its_worker_is_dead_lettered_after_max_deliveries(
    client: Client, redis_workers: dict[str, WorkerProcess], broker: redis.Redis
) -> None:
    counter = f"crash:{uuid.uuid4()}"
    run = client.wait(client.submit("tests.crash", {"counter": counter}), timeout=TIMEOUT)
    limit = client.app.settings.max_deliveries
    assert run.status is RunStatus.FAILED
    assert run.error_type == "WorkerLost"
    assert f"more than max_deliveries ({limit}" in (run.error_message or "")
    assert int(broker.get(counter) or 0) == limit
    entry = await_entry(client.app, run.id)
    assert entry.reason is DeadLetterReason.WORKER_LOST
    assert entry.errors[-1]["type"] == "WorkerLost"
    assert_worker_alive(client, redis_workers["default"])
    assert int(broker.get(counter) or 0) == limit


def test_deliveries_count_per_attempt_and_redelivery_counts_an_unclaimed_first_delivery(
    redis_app: ConveyorApp,
) -> None:
    runs = redis_app.runs
    run = NewRun(id=str(uuid.uuid4()), agent="tests.crash", pool="default")
    assert runs.claim(run, "w1").deliveries == 1
    assert runs.claim(run, "w2").deliveries == 2  # still started: w1 died
    runs.record([Outcome(run=run, status=RunStatus.RETRYING, error_type="E", error_message="m")])
    assert runs.claim(run, "w3").deliveries == 1  # a retry is a new attempt
    idempotent = NewRun(id=str(uuid.uuid4()), agent="tests.big", pool="default")
    assert runs.claim(idempotent, "w1", redelivered=True).deliveries == 2
    errors = run_errors(redis_app, run.id)
    assert [(e["status"], e["type"], e["message"]) for e in errors] == [("retrying", "E", "m")]


def _publish(app: ConveyorApp, body: bytes, headers: dict[str, Any], content_type: str) -> None:
    binary = content_type == "application/x-python-serialize"
    publish_raw(app, body, headers, content_type, content_encoding="binary" if binary else "utf-8")


def _task_body(args: Any = (), kwargs: Any = None) -> bytes:
    return json.dumps([list(args), kwargs or {"a": 1, "b": 2}, {}]).encode()


POISON = {
    "not_json": (b"{not json", "application/json", {"task": "tests.add"}, "not_json"),
    "pickle": (
        b"\x80\x04K\x01.",
        "application/x-python-serialize",
        {"task": "tests.add"},
        "not_json",
    ),
    "unknown_task": (_task_body(), "application/json", {"task": "tests.nope"}, "unknown_task"),
    "no_id": (
        _task_body(),
        "application/json",
        {"task": "tests.add", "id": None},
        "missing_fields",
    ),
    "args_not_a_list": (
        json.dumps(["x", {}, {}]).encode(),
        "application/json",
        {"task": "tests.add"},
        "missing_fields",
    ),
    "no_task": (json.dumps({"hello": 1}).encode(), "application/json", {}, "missing_fields"),
    "undecodable_without_task": (b"\xff\xfe", "application/json", {}, "not_json"),
}


@pytest.mark.parametrize("kind", list(POISON))
def test_a_malformed_message_is_dead_lettered_and_the_worker_stays_up(
    client: Client, redis_workers: dict[str, WorkerProcess], broker: redis.Redis, kind: str
) -> None:
    body, content_type, headers, reason = POISON[kind]
    marker = uuid.uuid4().hex
    full = {"id": marker, **headers, "marker": marker}
    full = {k: v for k, v in full.items() if v is not None}
    _publish(client.app, body, full, content_type)

    def recorded() -> list[DeadLetterEntry]:
        entries = client.app.dead_letters.find(pool="default", limit=200)
        return [e for e in entries if e.headers.get("marker") == marker]

    wait_until(lambda: bool(recorded()), TIMEOUT, f"the {kind} message to be dead-lettered")
    [entry] = recorded()
    assert entry.reason.value == reason
    assert entry.queue == client.app.settings.pool("default").queue(
        client.app.settings.queue_prefix
    )
    assert not entry.replayable or kind == "unknown_task"
    assert_worker_alive(client, redis_workers["default"])
    assert not any(marker.encode() in v for v in broker.hvals("unacked"))
    assert len(recorded()) == 1


def test_a_50_mb_message_is_refused_without_running_and_not_redelivered(
    client: Client, redis_workers: dict[str, WorkerProcess], broker: redis.Redis
) -> None:
    """Submitted as the Client does (recorded as queued, then published), so the refusal
    must also end the run: a waiting client gets `rejected`, not a timeout."""
    run_id = str(uuid.uuid4())
    body = _task_body(kwargs={"a": 1, "b": 2, "pad": "x" * (50 * 1024 * 1024)})
    queued = NewRun(id=run_id, agent="tests.add", pool="default")
    headers = {"task": "tests.add", "id": run_id}
    client.runs.enqueue([queued], lambda _: _publish(client.app, body, headers, "application/json"))
    run = client.wait(run_id, timeout=TIMEOUT)
    assert (run.status, run.error_type) == (RunStatus.REJECTED, "MessageTooLarge")
    assert "max_message_bytes" in (run.error_message or "")
    entry = await_entry(client.app, run_id)
    assert entry.reason is DeadLetterReason.TOO_LARGE
    assert str(client.app.settings.max_message_bytes) in entry.detail
    assert entry.body_bytes == len(body) and entry.body_truncated
    assert len(entry.body or "") < 100_000
    assert run.started_at is None and run.worker is None  # never ran
    assert [(e["status"], e["type"]) for e in run_errors(client.app, run_id)] == [
        ("rejected", "MessageTooLarge")
    ]
    assert_worker_alive(client, redis_workers["default"])
    assert not any(run_id.encode() in v for v in broker.hvals("unacked"))


def test_replay_runs_the_run_again_exactly_once(
    client: Client, redis_env: dict[str, str], broker: redis.Redis
) -> None:
    flag, counter = f"flag:{uuid.uuid4()}", f"count:{uuid.uuid4()}"
    run = client.wait(
        client.submit("tests.until_flag", {"flag": flag, "counter": counter}), timeout=TIMEOUT
    )
    assert run.status is RunStatus.FAILED
    entry = await_entry(client.app, run.id)
    assert len(entry.errors) == 2
    broker.set(flag, "1")

    first = conveyor(redis_env, "dlq", "replay", str(entry.id), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"replayed": [entry.id], "skipped": {}}
    replayed = client.wait(run.id, timeout=TIMEOUT)
    assert (replayed.status, replayed.output) == (RunStatus.SUCCEEDED, 3)

    second = conveyor(redis_env, "dlq", "replay", str(entry.id), "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {
        "replayed": [],
        "skipped": {str(entry.id): "already_replayed"},
    }
    assert client.result(client.submit("tests.add", {"a": 1, "b": 1}), timeout=TIMEOUT) == 2
    assert int(broker.get(counter) or 0) == 3
    assert client.get(run.id).status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
    after = client.app.dead_letters.get(entry.id)
    assert after is not None and after.replayed_at is not None
    assert entry.id not in [e.id for e in client.app.dead_letters.find(limit=500)]


def _add_letter(app: ConveyorApp) -> tuple[int, NewDeadLetter]:
    """A pending entry written straight to the store: a replayable unknown-task message."""
    letter = NewDeadLetter.capture(
        body=json.dumps([[], {"a": 1, "b": 2}, {}]),
        pool="default",
        run_id=str(uuid.uuid4()),
        task="tests.add",
        reason=DeadLetterReason.UNKNOWN_TASK,
        detail="d",
    )
    entry_id = app.dead_letters.add(letter)
    assert entry_id is not None
    return entry_id, letter


def _blocked_on_a_letter(app: ConveyorApp) -> bool:
    """Whether a session of this database waits on another's lock in an UPDATE of
    dead_letters: the second replay, queued behind the first one's row lock."""
    with app.dead_letters.engine.connect() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND cardinality(pg_blocking_pids(pid)) > 0 AND query ILIKE 'UPDATE dead_letters%'"
        )
        return bool(conn.execute(query).scalar())


def test_concurrent_replays_of_one_entry_publish_once(redis_app: ConveyorApp) -> None:
    """The race is forced: the first replay publishes inside its transaction and does not
    commit until the second replay has either returned or is waiting on the first one's
    row lock. So the second always arrives while the entry is taken but not yet committed,
    and must still publish nothing."""
    store = redis_app.dead_letters
    entry_id, letter = _add_letter(redis_app)
    assert store.add(letter) is None  # one pending entry per run
    published: list[int] = []
    inside = threading.Event()
    met: list[str] = []
    second: Future[ReplayOutcome] | None = None

    def publish_when_the_second_has_arrived(entry: DeadLetterEntry) -> None:
        published.append(entry.id)
        if inside.is_set():
            return  # a second publish: the test fails on `published`
        inside.set()
        wait_until(
            lambda: second is not None and (second.done() or _blocked_on_a_letter(redis_app)),
            TIMEOUT,
            "the second replay to wait on the first one's transaction, or to return",
        )
        assert second is not None
        met.append("returned" if second.done() else "blocked")

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(store.replay, entry_id, publish_when_the_second_has_arrived)
        assert inside.wait(TIMEOUT), "the first replay never published"
        second = pool.submit(store.replay, entry_id, publish_when_the_second_has_arrived)
        outcomes = [first.result(), second.result()]
    assert met == ["blocked"], "the second replay did not wait for the first one's commit"
    assert outcomes == [ReplayOutcome.REPLAYED, ReplayOutcome.ALREADY_REPLAYED]
    assert published == [entry_id]
    assert store.replay(987654321, publish_when_the_second_has_arrived) is ReplayOutcome.UNKNOWN


def _dead_run(client: Client) -> DeadLetterEntry:
    """A fresh pending entry: a run of tests.flaky that ran out of retries."""
    run_id = client.submit("tests.flaky", {"key": f"f:{uuid.uuid4()}", "fail_times": 10})
    return await_entry(client.app, run_id)


def test_cli_list_show_and_purge(client: Client) -> None:
    entries = [_dead_run(client) for _ in range(2)]
    ids = [e.id for e in entries]

    listed = dlq(client.app, "list", "--pool", "default", "--limit", "500", "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert set(ids) <= set(rows)
    assert rows[ids[0]]["reason"] == "retries_exhausted" and rows[ids[0]]["body"] is None
    table = dlq(client.app, "list", "--pool", "default", "--limit", "500")
    assert "retries_exhausted" in table.output and "tests.flaky" in table.output

    shown = dlq(client.app, "show", str(ids[0]), "--json")
    assert shown.exit_code == 0, shown.output
    assert len(json.loads(shown.stdout)["errors"]) == 4
    table_view = dlq(client.app, "show", str(ids[0]))
    assert "error history (4)" in table_view.output
    assert "transient failure 3" in table_view.output

    refused = dlq(client.app, "purge", "--pool", "default")
    assert refused.exit_code == 1 and "--yes" in refused.stderr
    assert client.app.dead_letters.get(ids[0]) is not None

    with client.app.runs.engine.begin() as conn:
        conn.execute(
            text("UPDATE dead_letters SET created_at = now() - interval '2 days' WHERE id = :id"),
            {"id": ids[1]},
        )
    aged = dlq(client.app, "purge", "--pool", "default", "--older-than", "1d", "--json")
    assert json.loads(aged.stdout) == {"purged": [ids[1]]}  # one match: no --yes needed

    one = dlq(client.app, "purge", str(ids[0]), "--json")
    assert json.loads(one.stdout) == {"purged": [ids[0]]}
    assert client.app.dead_letters.get(ids[0]) is None
    assert client.app.dead_letters.get(ids[1]) is None
    for _ in range(2):
        _add_letter(client.app)
    everything = dlq(client.app, "purge", "--pool", "default", "--yes", "--json")
    assert len(json.loads(everything.stdout)["purged"]) >= 2
    assert client.app.dead_letters.find(pool="default") == []


def test_cli_refuses_bad_input_clearly(client: Client) -> None:
    missing = dlq(client.app, "show", "987654321")
    assert missing.exit_code == 1
    assert "no dead letter with id 987654321" in missing.stderr
    assert dlq(client.app, "replay").exit_code == 2
    assert dlq(client.app, "replay", "1", "--all").exit_code == 2
    assert dlq(client.app, "purge").exit_code == 2
    unknown_pool = dlq(client.app, "list", "--pool", "nope")
    assert unknown_pool.exit_code == 1 and "unknown pool 'nope'" in unknown_pool.stderr
    not_an_id = dlq(client.app, "show", "abc")
    assert not_an_id.exit_code == 2 and "is not a valid integer" in not_an_id.stderr

    marker = uuid.uuid4().hex
    _publish(client.app, b"{nope", {"task": "tests.add", "id": marker}, "application/json")
    entry = await_entry(client.app, marker)
    refused = dlq(client.app, "replay", str(entry.id))
    assert refused.exit_code == 1
    assert f"cannot replay {entry.id} (not_json" in refused.stderr
    assert client.app.dead_letters.get(entry.id).replayed_at is None  # type: ignore[union-attr]


def test_exporter_reports_the_dlq_size_per_pool(client: Client) -> None:
    _dead_run(client)
    exporter = Exporter(client.app, events=False, ttl=0)
    try:
        reply: list[Any] = []
        body = b"".join(
            exporter({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}, lambda *a: reply.extend(a))
        ).decode()
    finally:
        exporter.close()
    sizes = client.app.dead_letters.sizes()
    assert sizes["default"] >= 1
    for pool in client.app.settings.pools:
        assert f'conveyor_dlq_size{{pool="{pool}"}} {float(sizes.get(pool, 0))}' in body


@pytest.fixture(scope="module")
def amqp_client(amqp_url: str, database_url: str, log_dir: Path) -> Iterator[Client]:
    """A default worker on RabbitMQ, where a lost worker's message comes back by a broker
    redelivery (not kombu's Redis restore) and the body arrives as plain bytes."""
    env = service_env(amqp_url, database_url, f"dlq{uuid.uuid4().hex[:6]}.")
    env["CONVEYOR_MAX_DELIVERIES"] = "2"  # the setting is honoured (and a crash cycle saved)
    app = make_app(env)
    worker = WorkerProcess(app, env, "default", log_dir).wait_ready()
    try:
        with Client(app) as client:
            yield client
    finally:
        worker.stop()


def test_over_rabbitmq_a_crashing_idempotent_run_and_a_malformed_message_are_dead_lettered(
    amqp_client: Client, broker: redis.Redis
) -> None:
    """An idempotent agent skips the claim on its first delivery; its redelivery claims and
    counts as the second, so it also runs exactly max_deliveries times."""
    counter = f"crash:{uuid.uuid4()}"
    submitted = amqp_client.submit("tests.crash_idempotent", {"counter": counter})
    run = amqp_client.wait(submitted, timeout=60)
    assert (run.status, run.error_type) == (RunStatus.FAILED, "WorkerLost")
    assert amqp_client.app.settings.max_deliveries == 2
    assert int(broker.get(counter) or 0) == 2
    assert await_entry(amqp_client.app, run.id).reason is DeadLetterReason.WORKER_LOST

    run_id = str(uuid.uuid4())
    _publish(amqp_client.app, b"[1, 2]", {"task": "tests.add", "id": run_id}, "application/json")
    entry = await_entry(amqp_client.app, run_id)
    assert entry.reason is DeadLetterReason.MISSING_FIELDS
    assert "got list of 2 items" in entry.detail
    assert amqp_client.result(amqp_client.submit("tests.add", {"a": 1, "b": 2}), timeout=60) == 3
