"""How a run's final state reaches waiting clients: PostgreSQL NOTIFY on one channel, framed
in the same statement that commits the row (runs.statements.RECORD), and parsed back here.

A notification is one of:
- the whole row as JSON (`row_to_json`, so it starts with `{"id":"`), when it fits;
- one part of a larger row, "~<id> <part> <parts> <text>", the parts of one transaction
  arriving together and in order;
- "<id> <status>", when the row is too large to send: the client reads it back.
"""

from __future__ import annotations

from collections.abc import Callable

from conveyor.runs.records import Run
from conveyor.runs.status import FINAL_STATUSES, RunStatus

NOTIFY_CHANNEL = "conveyor_runs"
NOTIFY_ROW_LIMIT = 7000
"""A finished row up to this many bytes travels whole in one notification (PostgreSQL's
limit is 8000 bytes), so a waiting client need not read it back."""
NOTIFY_CHUNK_CHARS = 1900
"""A larger row travels in parts of this many characters (at most 7600 bytes of UTF-8),
each sent as "~<id> <part> <parts> <text>"; notifications of one transaction arrive
together and in order, and the client joins them."""
NOTIFY_MAX_CHUNKS = 8
"""Beyond this many parts (15,200 characters) a row sends "<id> <status>" and the client
reads it back: cutting parts costs the server more than one read past this size."""
NOTIFY_SKIP_BYTES = 65536
"""A row whose input and output take more than this many bytes stored is not even rendered
as JSON for a notification: it sends "<id> <status>" at once (it could never fit in
NOTIFY_MAX_CHUNKS parts, and rendering 300 KB costs the write 4 ms)."""

NOTIFY_FRAMES = f"""rows AS MATERIALIZED (
    SELECT id, status, CASE
        WHEN coalesce(pg_column_size(input), 0) + coalesce(pg_column_size(output), 0)
             > {NOTIFY_SKIP_BYTES} THEN NULL
        ELSE row_to_json(written)::text
    END AS full_row FROM written
), sized AS MATERIALIZED (
    SELECT *, CASE
        WHEN full_row IS NULL THEN {NOTIFY_MAX_CHUNKS} + 1
        WHEN octet_length(full_row) <= {NOTIFY_ROW_LIMIT} THEN 0
        ELSE ceil(char_length(full_row) / {NOTIFY_CHUNK_CHARS}.0)::int
    END AS parts
    FROM rows
)
SELECT pg_notify('{NOTIFY_CHANNEL}', CASE
    WHEN parts = 0 THEN full_row
    WHEN parts > {NOTIFY_MAX_CHUNKS} THEN id || ' ' || status
    ELSE format('~%s %s %s %s', id, part, parts,
                substr(full_row, (part - 1) * {NOTIFY_CHUNK_CHARS} + 1, {NOTIFY_CHUNK_CHARS}))
END)
FROM sized, generate_series(1, CASE WHEN parts BETWEEN 1 AND {NOTIFY_MAX_CHUNKS}
                                    THEN parts ELSE 1 END) AS part"""
"""The tail of a statement whose CTE `written` returns the committed rows: the CTEs `rows`
and `sized`, then one pg_notify per row or part, framed as the module docstring says."""

ROW_PREFIX = '{"id":"'
"""How a notification that carries a whole row starts (row_to_json, id first)."""
_FINAL = {s.value for s in FINAL_STATUSES}


def ended(run_id: str, status: RunStatus) -> str:
    """The short notification for a run that ended without its row: "<id> <status>"."""
    return f"{run_id} {status.value}"


class Notifications:
    """Reads one LISTEN connection's notifications back into runs that ended, joining the
    parts of large rows. Parts of runs nobody waits for are skipped unread."""

    def __init__(self) -> None:
        self._parts: dict[str, list[str]] = {}

    def clear(self) -> None:
        self._parts.clear()

    def read(self, payload: str, wanted: Callable[[str], bool]) -> tuple[str, Run | None] | None:
        """(run id, the whole run if it came along) for a final state of a `wanted` run;
        None for anything else, or for a part that does not complete its row."""
        if payload.startswith("~"):
            payload = self._join_part(payload, wanted)
            if not payload:
                return None
        if payload.startswith(ROW_PREFIX):
            run_id = payload[len(ROW_PREFIX) : payload.find('"', len(ROW_PREFIX))]
            if not wanted(run_id):
                return None
            run = Run.model_validate_json(payload)
            return (run_id, run) if run.status.value in _FINAL else None
        run_id, _, status = payload.partition(" ")
        return (run_id, None) if status in _FINAL and wanted(run_id) else None

    def _join_part(self, payload: str, wanted: Callable[[str], bool]) -> str:
        """Collect one part of a row sent in parts; the whole row once its last part is in."""
        run_id, part, parts, text = payload[1:].split(" ", 3)
        if part == "1" and wanted(run_id):
            self._parts[run_id] = []
        received = self._parts.get(run_id)
        if received is None or len(received) != int(part) - 1:
            self._parts.pop(run_id, None)
            return ""
        received.append(text)
        if part != parts:
            return ""
        return "".join(self._parts.pop(run_id))
