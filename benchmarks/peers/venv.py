"""The peers' own venvs, one per peer (arq pins redis < 6, taskiq-redis wants redis 8): made on
first use with pip from PyPI under benchmarks/.peers-venv/ (or BENCH_PEERS_VENV), kept for
later runs, brought up to REQUIREMENTS when these change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
ROOT = Path(os.environ.get("BENCH_PEERS_VENV") or REPO / "benchmarks" / ".peers-venv")
REQUIREMENTS = {
    "arq": ("arq==0.28.0",),
    "taskiq": ("taskiq==0.13.0", "taskiq-redis==1.2.4"),
}
"""Pinned, so figures of different days compare; change them here (the venvs follow)."""
STAMP = "conveyor-bench-requirements.txt"


def python(peer: str) -> str:
    """The interpreter of `peer`'s venv, the venv made or brought up to date first."""
    venv = ROOT / peer
    exe, stamp = venv / "bin" / "python", venv / STAMP
    wanted = "\n".join(REQUIREMENTS[peer]) + "\n"
    if exe.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(exe)
    print(f"[concurrency] installing {' '.join(REQUIREMENTS[peer])} into {venv}", file=sys.stderr)
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(exe), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *REQUIREMENTS[peer]],
        check=True, stdout=sys.stderr,
    )  # fmt: skip
    stamp.write_text(wanted)
    return str(exe)


def version(peer: str) -> str:
    """The peer's pinned version (its first requirement)."""
    return REQUIREMENTS[peer][0].split("==")[1]
