"""The schema head the code checks against without importing alembic is the head of its
migrations, as alembic reads them."""

from __future__ import annotations

import subprocess
import sys

from conveyor.models.migrate import HEAD, migrations_head


def test_head_is_the_head_of_the_migrations() -> None:
    assert migrations_head() == HEAD, "a new migration: set conveyor.models.migrate.HEAD to it"


def test_a_worker_or_command_that_only_checks_the_schema_never_imports_alembic() -> None:
    code = "import sys, conveyor.cli, conveyor.workers.boot; print('alembic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
