"""The one switch that makes every skip a failure: ``RUNNER_NO_SKIP=1`` (CI sets it).

A test skips where a real part is missing (a Docker engine, a browser, PostgreSQL, a module);
on a developer's machine that is a convenience, in CI it would hide a broken install, so there
every skip, wherever it was raised (a fixture, ``importorskip``, a marker), is reported as a
failure that names the reason. Loaded by ``tests/conftest.py``, which also imports it first
(PYTEST_DONT_REWRITE: it asserts nothing, so pytest need not warn that it cannot rewrite it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

SWITCH = "RUNNER_NO_SKIP"


def no_skip() -> bool:
    """True where every test must run (CI): a test that would skip fails instead."""
    return os.environ.get(SWITCH) == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (no_skip() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = (
        call.excinfo.value.msg
        if call.excinfo is not None and hasattr(call.excinfo.value, "msg")
        else str(report.longrepr)
    )
    report.outcome = "failed"
    report.longrepr = f"{SWITCH}=1: every test must run, but this one skipped: {reason}"
