"""Attack: another user of the machine reads the control plane's home (issue 15, point 9).

The home holds the database (tenants, keys' hashes, the ledger), the operator key, the Ray
token, logs and request files. Before ``Settings.make_home`` an older home was 0755 with 0644
files, so any local account could copy ``runner.db``. The test is that attack, run as
``nobody``: it must read the file before (the control, so a broken setup cannot pass) and be
refused after.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.settings import Settings


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A folder every user may enter, as /home or /srv are: only the home's own mode protects it."""
    parent = Path(tempfile.mkdtemp(prefix="runner-home-mode-"))
    parent.chmod(0o755)
    yield parent
    subprocess.run(["rm", "-rf", str(parent)], check=True)


def read_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        pytest.skip("reading as another user needs root (setuid to nobody)")
    return subprocess.run(
        ["cat", str(path)], user="nobody", group="nogroup", capture_output=True, text=True, timeout=10
    )


def test_another_user_cannot_read_an_old_world_readable_home(open_parent: Path) -> None:
    home = open_parent / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    database = home / "runner.db"
    database.write_text("tenants, keys, ledger")
    database.chmod(0o644)

    control = read_as_nobody(database)
    assert control.returncode == 0 and control.stdout == "tenants, keys, ledger", control.stderr

    Settings(home=home).make_home()

    attack = read_as_nobody(database)
    assert attack.returncode != 0 and attack.stdout == ""
    assert "Permission denied" in attack.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_a_new_home_is_owner_only_whatever_the_umask(open_parent: Path) -> None:
    home = open_parent / "fresh" / "home"
    old = os.umask(0o022)
    try:
        Settings(home=home).make_home()
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    (home / "runner.db").write_text("x")
    assert read_as_nobody(home / "runner.db").returncode != 0
