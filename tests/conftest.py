"""Under CI=true a skipped test fails the run, naming why it skipped: a service or tool the
project installs was missing, and a green run would claim suites that never ran. The one
allowed skip is the optional extra below, which CI does not install."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

ALLOWED_SKIPS = ("the conveyor[minilm] extra is optional",)


def skip_reason(report: pytest.TestReport) -> str:
    longrepr: Any = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and os.environ.get("CI") == "true"):
        return
    reason = skip_reason(report)
    if reason in ALLOWED_SKIPS or getattr(report, "wasxfail", None) is not None:
        return
    report.outcome = "failed"
    report.longrepr = (
        f"CI=true, and this test skipped: {reason}\n"
        "CI installs and starts everything the tests need (./dev test); a skip here means "
        "a suite did not run. Only the optional extra may skip: "
        f"{', '.join(ALLOWED_SKIPS)}."
    )
