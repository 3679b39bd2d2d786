"""The CI switch: under RUNNER_NO_SKIP=1 a skip anywhere (a test, a fixture, importorskip, a
marker) fails the run and names its reason; without it a skip stays a skip; xfail is untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIPPING = """
import pytest

@pytest.fixture
def engine():
    pytest.skip("no engine here")

def test_in_body():
    pytest.skip("no browser here")

def test_in_fixture(engine):
    pass

def test_import():
    pytest.importorskip("a_module_that_is_not_there")

@pytest.mark.skip(reason="marked")
def test_marked():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    assert True
"""


def run(tmp_path: Path, switch: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_NO_SKIP"}
    if switch is not None:
        env["RUNNER_NO_SKIP"] = switch
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.support.no_skip",
            str(tmp_path / "test_skipping.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_under_the_switch_every_skip_fails_and_names_its_reason(tmp_path: Path) -> None:
    out = run(tmp_path, "1")
    assert out.returncode == 1, out.stdout
    # Skips in a test's body fail it; skips in its setup (fixtures, markers) are errors there.
    assert "2 failed, 1 passed, 1 xfailed, 2 errors" in out.stdout, out.stdout
    for reason in ("no browser here", "no engine here", "a_module_that_is_not_there", "marked"):
        assert reason in out.stdout, reason
    assert "skipped" not in out.stdout.splitlines()[-1]


def test_without_it_a_skip_is_a_skip(tmp_path: Path) -> None:
    out = run(tmp_path, None)
    assert out.returncode == 0, out.stdout
    assert "1 passed, 4 skipped, 1 xfailed" in out.stdout, out.stdout
