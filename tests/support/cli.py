"""The `conveyor` command run as a user would: a subprocess with the test's environment."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.workers import ROOT


def conveyor(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )
