"""JSON for JSONB columns, which cannot hold U+0000 in any string.

A string with NUL is stored as {"$conveyor:nul": <the string, backslashes doubled and each NUL
written as \\0>} and turned back on read, so run inputs and outputs survive exactly. In an
object key, or in a text column such as an error message, NUL becomes U+FFFD.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

NUL = "\x00"
MARKER = "$conveyor:nul"
_ESCAPED_NUL = "\\u0000"
_QUOTED_MARKER = f'"{MARKER}"'


def reject_nul(value: str) -> str:
    """`value`, or ValueError if it holds NUL (for names and keys that must be exact)."""
    if NUL in value:
        raise ValueError("must not contain NUL (U+0000)")
    return value


def escape_nul(value: str) -> str:
    """`value` without NUL, reversibly: backslashes doubled, each NUL written as \\0."""
    return value.replace("\\", "\\\\").replace(NUL, "\\0")


def unescape_nul(stored: str) -> str:
    """The string `escape_nul` was given."""
    out: list[str] = []
    chars = iter(stored)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(NUL if following == "0" else following)
        else:
            out.append(char)
    return "".join(out)


def storable(value: Any) -> Any:
    """`value` with every string that holds NUL wrapped, and NUL in keys replaced."""
    if isinstance(value, str):
        return {MARKER: escape_nul(value)} if NUL in value else value
    if isinstance(value, dict):
        return {str(k).replace(NUL, "\ufffd"): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
_STRICT |= orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS


def encode(value: Any) -> str:
    """JSON text of `value`: orjson (a search result's thousands of floats, 20x faster), or
    the standard library for what orjson leaves to it (datetimes, subclasses, huge ints),
    which raises TypeError for what is not JSON."""
    try:
        return orjson.dumps(value, option=_STRICT).decode()
    except TypeError:
        return json.dumps(value)


def dumps(value: Any) -> str:
    """JSON text that PostgreSQL accepts as jsonb, whatever strings `value` holds."""
    dumped = encode(value)
    return encode(storable(value)) if _ESCAPED_NUL in dumped else dumped


def dumps_rows(rows: list[dict[str, Any]], json_fields: tuple[str, ...]) -> str:
    """Rows for jsonb_to_recordset: JSON fields made storable, NUL dropped from text fields."""
    dumped = encode(rows)
    if _ESCAPED_NUL not in dumped:
        return dumped
    return encode(
        [
            {k: storable(v) if k in json_fields else text(v) if isinstance(v, str) else v
             for k, v in row.items()}
            for row in rows
        ]
    )  # fmt: skip


def restore(value: Any) -> Any:
    """The value `dumps` was given, from what JSONB gave back. A value without the marker
    (one fast serialisation tells) is returned as is, not walked item by item."""
    if isinstance(value, dict | list) and _QUOTED_MARKER not in encode(value):
        return value
    return _restored(value)


def _restored(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(MARKER), str):
            return unescape_nul(value[MARKER])
        return {k: _restored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restored(v) for v in value]
    return value


def text(value: str | None) -> str | None:
    """A string a text column accepts."""
    return value.replace(NUL, "\ufffd") if value and NUL in value else value
