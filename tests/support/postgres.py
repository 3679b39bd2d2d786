"""A real PostgreSQL server for tests: a fresh cluster in a temp folder, on a unix socket only.

Debian's ``postgresql`` package provides the binaries (``scripts/setup.sh`` installs it). The
server refuses to run as root, so as root it runs as the ``postgres`` user that package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway server; yields its SQLAlchemy URL (psycopg 3, unix socket)."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (pg_ctl). To fix: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="runner-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "runner", "--no-sync")
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-w",
        "-l",
        str(root / "server.log"),
        "-o",
        f"-k {sock} -c listen_addresses='' -c fsync=off",
        "start",
    )
    try:
        run(str(bindir / "createdb"), "-h", str(sock), "-U", "runner", "runner")
        yield f"postgresql+psycopg://runner@/runner?host={sock}"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
