"""A read-only mount's folder, as a snapshot no container can change under the engine.

A service serves a checkpoint from inside a training job's checkpoint folder, which that job's
containers write. Checking the folder for symlinks and then handing its path to the engine
leaves a gap: between the check and the engine resolving the path at the container's start, a
container of the training job can swap a folder on the way for a symlink to ``/``, and the
service's container would get the machine's root bound into it. So a read-only mount is bound
from a snapshot instead: ``<artifacts>/.snapshots/<replica key>/``, folders made here (root's,
0755, below a folder no container is bound to) and each regular file hard-linked into them
(no copy: the same inodes). The source is walked by file descriptors, never by path (``openat``
with ``O_NOFOLLOW`` down from the artifact store, then ``os.fwalk``), so a symlink swapped in
anywhere is never followed; symlinks and special files are left out. What the engine binds is
then a path no tenant can write to.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from runner.core.errors import UserError

#: Below the node's artifact store: where the snapshots of read-only mounts are made.
SNAPSHOTS = ".snapshots"


def snapshot_path(artifacts_dir: Path, key: str) -> Path:
    return Path(artifacts_dir) / SNAPSHOTS / key


def snapshot(source: Path, artifacts_dir: Path, key: str) -> Path:
    """The snapshot of folder ``source`` (inside ``artifacts_dir``) for replica ``key``, made
    again from scratch (a start that is repeated gets the source as it is now)."""
    top = _open_below(Path(artifacts_dir), Path(source))
    dest = snapshot_path(artifacts_dir, key)
    try:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True, mode=0o755)
        for dirpath, _dirs, names, dirfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            into = dest / dirpath
            into.mkdir(mode=0o755, exist_ok=True)
            for name in names:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    os.link(name, into / name, src_dir_fd=dirfd, follow_symlinks=False)
    finally:
        os.close(top)
    return dest


def drop_snapshot(artifacts_dir: Path, key: str) -> None:
    """Remove replica ``key``'s snapshot, if it has one (the hard links only: the files stay)."""
    shutil.rmtree(snapshot_path(artifacts_dir, key), ignore_errors=True)


def _open_below(root: Path, source: Path) -> int:
    """A descriptor of folder ``source``, opened one component at a time down from ``root``
    without following any symlink (a swapped-in one fails the open)."""
    rel = Path(os.path.relpath(os.path.normpath(source), os.path.normpath(root)))
    if rel.parts and rel.parts[0] == "..":
        raise UserError(f"mount {source}: outside this node's artifact store {root}; refusing to bind it")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in rel.parts if str(rel) != "." else ():
            try:
                below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise UserError(
                    f"mount {source}: {part!r} is not a folder (a symlink, or gone: {exc.strerror}); refusing to bind it"
                ) from None
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd
