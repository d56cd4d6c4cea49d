"""Suite-wide rules."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI (``CI=true``) a skipped database test is a failure: CI must test the database."""
    report = yield
    needs_db = item.get_closest_marker("integration") is not None
    if report.skipped and needs_db and os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        report.outcome = "failed"
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"database test skipped in CI (CI=true): {reason}"
    return report
