"""The `celery` command as a plain Celery install runs it: conveyor cannot be imported.

Usage: python celery_without_conveyor.py <celery arguments>. Any attempt to import conveyor
(or its example plugin) fails, and is reported on stderr as `BLOCKED IMPORT <name>` so a
test sees it even where the importer swallows the error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = ("conveyor", "conveyor_examples")


class RefuseConveyor(MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.split(".")[0] in BLOCKED:
            print(f"BLOCKED IMPORT {name}", file=sys.stderr, flush=True)
            raise ModuleNotFoundError(f"{name} is not installed in a plain Celery setup")
        return None


if __name__ == "__main__":
    sys.path = [p for p in sys.path if not p.rstrip("/").endswith("tests/support")]
    sys.meta_path.insert(0, RefuseConveyor())
    from celery.__main__ import main

    sys.argv = ["celery", *sys.argv[1:]]
    main()
