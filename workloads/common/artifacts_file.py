"""``file://`` artifact store: a directory tree with atomic, durable writes."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workloads.common.artifacts_base import (
    TMP_MARK,
    ArtifactError,
    ArtifactInfo,
    ArtifactNotFoundError,
    ArtifactStore,
    check_key,
)


class FileStore(ArtifactStore):
    """A directory tree. Writes go to a temp name in the target folder, are fsynced, renamed
    over the target and the folder fsynced, so a crash leaves the old file or the new one."""

    def __init__(self, uri: str, root: Path) -> None:
        super().__init__(uri)
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key, self.uri)

    def _fail(self, what: str, key: str, exc: OSError) -> ArtifactError:
        if isinstance(exc, FileNotFoundError):
            return ArtifactNotFoundError(f"no artifact at {self.url(key)}")
        return ArtifactError(
            f"cannot {what} {self.url(key)}: {exc.strerror or exc}; check that {self.root} "
            "exists and is writable by this user (containers run as uid 1000)"
        )

    @contextmanager
    def _atomic(self, key: str) -> Iterator[Any]:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
            with open(tmp, "wb") as f:
                try:
                    yield f
                    f.flush()
                    os.fsync(f.fileno())
                except BaseException:
                    f.close()
                    tmp.unlink(missing_ok=True)
                    raise
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            raise self._fail("write", key, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> str:
        with self._atomic(key) as f:
            f.write(data)
        return self.url(check_key(key, self.uri))

    def put_file(self, key: str, path: Path) -> str:
        with self._atomic(key) as f, open(path, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
        return self.url(check_key(key, self.uri))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise self._fail("read", key, exc) from exc

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._path(key), tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._fail("read", key, exc) from exc
        return dest

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            paths = [base]
        elif base.is_dir():
            paths = [p for p in base.rglob("*") if p.is_file() and TMP_MARK not in p.name]
        else:
            return []
        out = []
        for path in paths:
            try:
                st = path.stat()
            except FileNotFoundError:  # deleted while listing
                continue
            key = path.relative_to(self.root).as_posix()
            out.append(ArtifactInfo(key=key, size=st.st_size, modified=st.st_mtime, uri=self.url(key)))
        return sorted(out, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            _prune_empty_dirs(path.parent, self.root)
        except OSError as exc:
            raise self._fail("delete", key, exc) from exc

    def delete_prefix(self, prefix: str) -> int:
        """Removes the whole folder, temp files of interrupted writes included."""
        path = self._path(prefix)
        count = len(self.list(prefix))
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            _prune_empty_dirs(path.parent, self.root)
        except OSError as exc:
            raise self._fail("delete", prefix, exc) from exc
        return count


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the folder that holds the entry."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune_empty_dirs(path: Path, root: Path) -> None:
    while path != root and root in path.parents:
        try:
            path.rmdir()
        except OSError:  # not empty, or gone
            return
        path = path.parent
