"""RabbitMQ queue state from the management API: ready, unacknowledged and head age."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from conveyor.errors import ServiceUnavailable

COLUMNS = "name,messages_ready,messages_unacknowledged,head_message_timestamp"


def _request(url: str) -> urllib.request.Request:
    """A GET with the URL's user and password moved into a basic-auth header."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=netloc)))
    if parts.username is not None:
        token = f"{parts.username}:{parts.password or ''}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    return request


def management_counts(url: str, vhost: str) -> dict[str, tuple[int, float | None]]:
    """(unacknowledged, head message timestamp) of every queue in the vhost, in one call."""
    endpoint = f"{url.rstrip('/')}/api/queues/{quote(vhost, safe='')}?columns={COLUMNS}"
    try:
        with urllib.request.urlopen(_request(endpoint), timeout=5) as reply:
            rows: list[dict[str, Any]] = json.loads(reply.read())
    except OSError as exc:
        raise ServiceUnavailable(f"RabbitMQ management API unreachable: {exc}") from exc
    return {
        row["name"]: (
            int(row.get("messages_unacknowledged") or 0),
            float(row["head_message_timestamp"]) if row.get("head_message_timestamp") else None,
        )
        for row in rows
    }
