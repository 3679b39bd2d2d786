"""The artifact store's shared pieces: the error tree, the store interface, key rules.

A leaf module (stdlib only) that both backends (``artifacts_file``, ``artifacts_s3``) and the
public entry point ``workloads.common.artifacts`` build on.

Errors (all name the URI and say what to do)::

    ArtifactError               root
    ├── ArtifactURIError        not a file:// or s3:// URI, or a bad key
    ├── ArtifactNotFoundError   no object at that key (or no bucket)
    └── ArtifactCorruptError    manifest unreadable, or a file's size/sha256 differs
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "manifest.json"
TMP_MARK = ".tmp-"  # in-flight file names: ".<name>.tmp-<random>", never listed


class ArtifactError(Exception):
    """Root of every artifact store error; the message names the URI."""


class ArtifactURIError(ArtifactError, ValueError):
    """A URI with an unknown scheme or shape, or a key that would leave the store."""


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """Nothing is stored at that key."""


class ArtifactCorruptError(ArtifactError):
    """A published artifact fails its manifest: missing file, wrong size or wrong sha256."""


@dataclass(frozen=True)
class ArtifactInfo:
    """One stored object, as ``list`` returns it; ``key`` is relative to the store's URI."""

    key: str
    size: int
    modified: float  # seconds since the epoch
    uri: str


@dataclass(frozen=True)
class Manifest:
    """What ``publish`` wrote: per-file size and sha256, plus the caller's metadata."""

    prefix: str
    files: dict[str, dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: str, uri: str) -> str:
    """A normalised relative POSIX key, or ArtifactURIError: no absolute paths, no ``..``."""
    parts = [p for p in PurePosixPath(key).parts if p not in ("", ".")]
    if key.startswith("/") or not parts or ".." in parts or any(TMP_MARK in p for p in parts):
        raise ArtifactURIError(
            f"bad artifact key {key!r} under {uri}: use a relative path such as "
            "'step-00000100/model.pt' (no '/', '..' or '.tmp-' parts)"
        )
    return "/".join(parts)


def join(*parts: str) -> str:
    """Join key parts with '/', skipping empty ones (``join("", "a")`` is ``"a"``)."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class ArtifactStore(ABC):
    """Keys (relative POSIX paths) -> bytes under one root URI. Every put is atomic: a reader
    sees the old object, or no object, or the whole new one, never a part."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")

    def url(self, key: str = "") -> str:
        """The full URI of ``key`` (the store's own URI for ``""``)."""
        return f"{self.uri}/{key}" if key else self.uri

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` at ``key`` atomically; return its URI."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> str:
        """Store the file at ``path`` under ``key`` atomically; return its URI."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The bytes at ``key``; ArtifactNotFoundError when there are none."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> Path:
        """Download ``key`` to ``dest`` (written under a temp name, then renamed)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        """Every complete object under ``prefix`` (a key or a key folder), sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    def exists(self, key: str) -> bool:
        try:
            self.get_bytes(key)
        except ArtifactNotFoundError:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; return how many were removed."""
        items = self.list(prefix)
        for item in items:
            self.delete(item.key)
        return len(items)
