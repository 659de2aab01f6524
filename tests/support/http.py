"""Plain HTTP for tests: a free port, and GETs that never go through a proxy."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from typing import Any

_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    """Status and body of a GET; no proxy, whatever the environment says."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with _http.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return 0, str(exc).encode()


def get_json(url: str, auth: str | None = None) -> Any:
    status, body = get(url, auth)
    assert status == 200, (status, body[:500])
    return json.loads(body)
