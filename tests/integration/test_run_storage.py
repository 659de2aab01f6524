"""How agent_runs stores bulky values: lz4 compression, and final-state writes of large rows."""

from __future__ import annotations

import uuid

import psycopg
from sqlalchemy import text

from conveyor.models.db import engine_for
from conveyor.models.migrate import upgrade
from conveyor.runs.records import NewRun, Outcome
from conveyor.runs.repository import RunRepository
from conveyor.runs.status import RunStatus
from tests.support.services import scratch_database

COMPRESSION = text(
    "SELECT attname, attcompression FROM pg_attribute "
    "WHERE attrelid = 'agent_runs'::regclass AND attname IN ('input', 'output') ORDER BY 1"
)
LZ4 = text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")


def test_runs_are_compressed_with_lz4_where_the_server_has_it(pg_admin: str) -> None:
    with scratch_database(pg_admin, "conveyor_lz4") as url:
        upgrade(url)
        with engine_for(url).connect() as conn:
            has_lz4 = conn.execute(LZ4).scalar()
            columns = {name: method for name, method in conn.execute(COMPRESSION)}
        assert columns == dict.fromkeys(("input", "output"), "l" if has_lz4 else "")
        engine_for(url).dispose()


def test_a_large_output_is_stored_whole_and_notified_by_id_and_status(database_url: str) -> None:
    repo = RunRepository(engine_for(database_url))
    run = NewRun(id=str(uuid.uuid4()), agent="tests.big", pool="default", input={})
    output = {"ids": [[uuid.uuid4().hex for _ in range(10)] for _ in range(500)]}
    plain_url = database_url.replace("+psycopg", "")
    with psycopg.connect(plain_url, autocommit=True) as listener:
        listener.execute("LISTEN conveyor_runs")
        repo.record([Outcome(run=run, status=RunStatus.SUCCEEDED, output=output, attempts=1)])
        notes = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert notes == [f"{run.id} succeeded"]
    stored = repo.get(run.id)
    assert stored is not None and stored.output == output
