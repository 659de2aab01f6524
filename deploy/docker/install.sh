#!/bin/sh
# Installs conveyor into a virtualenv from the pinned requirements. The image's builder stage
# runs exactly these two steps, and tests/unit/test_docker_install.py runs them in a fresh
# virtualenv on the test machine, so a broken dependency list fails a test, not a build.
#
#   install.sh requirements VENV REQUIREMENTS   create VENV; install the pins, nothing else
#   install.sh project VENV SOURCE              install conveyor from SOURCE without
#                                               dependencies, then check the set and import it
#
# Every pin is installed with --no-deps, so only what requirements.txt lists is installed:
# a dependency missing from it, or a pin that conflicts with pyproject.toml, fails `pip check`.
# Regenerate the pins with deploy/docker/lock.sh.
set -eu

usage() { sed -n '6,8p' "$0" | cut -c3- >&2; exit 2; }
[ $# -eq 3 ] || usage
step=$1 venv=$2 source=$3
PYTHON=${PYTHON:-python3}

case "$step" in
  requirements)
    [ -f "$source" ] || { echo "install.sh: no requirements file $source" >&2; exit 2; }
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --no-deps --requirement "$source"
    ;;
  project)
    [ -x "$venv/bin/python" ] || { echo "install.sh: run the requirements step first" >&2; exit 2; }
    "$venv/bin/python" -m pip install --no-deps "$source"
    "$venv/bin/python" -m pip check
    # Import what the roles load, native libraries included (faiss, psycopg's libpq), and the
    # built-in agents through their entry points (the wheel's metadata).
    "$venv/bin/python" -c 'import conveyor.cli, faiss, psycopg; psycopg.pq.version()
from conveyor.agents import discover_agents
assert "conveyor.ping" in discover_agents(plugins=False).names()'
    "$venv/bin/conveyor" --help >/dev/null
    "$venv/bin/conveyor" health --help >/dev/null
    ;;
  *) usage ;;
esac
