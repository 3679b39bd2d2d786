"""Artifact store: bytes under keys below one URI, on a local disk (``file://``) or S3 (``s3://``).

Used inside containers (training checkpoints) and by the control plane (``runner artifacts
ls/get``), so it needs only the stdlib; boto3 is imported when an ``s3://`` store is first used.
This module is the one to import; the backends live in ``artifacts_file`` / ``artifacts_s3``
and the interface and errors in ``artifacts_base``.

    store = open_store("s3://bucket/runs/w-123")      # or file:///checkpoints/w-123
    store.put_bytes("notes.txt", b"hi")               # every single write is atomic
    store.list(), store.get_bytes(key), store.get_file(key, dest), store.exists(key)
    publish(store, "step-00000100", {"model.pt": data}, meta={"step": 100})
    manifest, files = fetch_verified(store, "step-00000100")   # checksums checked

Why a manifest: a directory of files is not atomic on either backend. ``publish`` writes the
files first and ``manifest.json`` (name, size and sha256 of each) last, so a reader that finds a
manifest knows every file it names was complete, and ``fetch_verified`` proves it byte for byte:
a half-written or bit-flipped artifact is refused with ``ArtifactCorruptError``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from workloads.common.artifacts_base import (
    MANIFEST,
    ArtifactCorruptError,
    ArtifactError,
    ArtifactInfo,
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactURIError,
    Manifest,
    check_key,
    join,
    sha256_hex,
)
from workloads.common.artifacts_file import FileStore
from workloads.common.artifacts_s3 import S3Store

__all__ = [
    "MANIFEST",
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactInfo",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "ArtifactURIError",
    "FileStore",
    "Manifest",
    "S3Store",
    "check_key",
    "fetch_verified",
    "join",
    "open_store",
    "publish",
    "read_manifest",
    "sha256_hex",
]

MANIFEST_FORMAT = 1


def open_store(uri: str, *, s3_client: Any = None) -> ArtifactStore:
    """The store for ``uri``: ``file:///abs/path`` or ``s3://bucket[/prefix]``."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ArtifactURIError(
                f"{uri}: a file URI needs an absolute path, e.g. file:///checkpoints/run-1 (got host {parts.netloc!r})"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ArtifactURIError(f"{uri}: a file URI needs an absolute path, e.g. file:///checkpoints/run-1")
        return FileStore(uri, Path(path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ArtifactURIError(f"{uri}: an S3 URI names a bucket, e.g. s3://my-bucket/runs/run-1")
        return S3Store(uri, parts.netloc, unquote(parts.path), client=s3_client)
    raise ArtifactURIError(f"{uri!r} is not an artifact URI; use file:///abs/path or s3://bucket/prefix")


# --------------------------------------------------------------------------- atomic publish


def publish(
    store: ArtifactStore, prefix: str, files: Mapping[str, bytes | Path], meta: Mapping[str, Any] | None = None
) -> Manifest:
    """Write ``files`` under ``prefix``, then ``manifest.json`` naming each one's size and
    sha256. The manifest is the commit point: until it exists the artifact does not."""
    entries: dict[str, dict[str, Any]] = {}
    for name, content in files.items():
        name = check_key(name, store.uri)
        if isinstance(content, Path):
            with open(content, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = content.stat().st_size
            store.put_file(join(prefix, name), content)
        else:
            digest, size = sha256_hex(content), len(content)
            store.put_bytes(join(prefix, name), content)
        entries[name] = {"sha256": digest, "size": size}
    manifest = Manifest(prefix=prefix, files=entries, meta=dict(meta or {}), created_at=time.time())
    doc = {"format": MANIFEST_FORMAT, "files": entries, "meta": manifest.meta, "created_at": manifest.created_at}
    store.put_bytes(join(prefix, MANIFEST), json.dumps(doc, indent=1, sort_keys=True).encode())
    return manifest


def read_manifest(store: ArtifactStore, prefix: str) -> Manifest:
    """The manifest under ``prefix``; NotFound when there is none, Corrupt when unreadable."""
    key = join(prefix, MANIFEST)
    raw = store.get_bytes(key)
    try:
        doc = json.loads(raw)
        files = {str(name): {"sha256": str(e["sha256"]), "size": int(e["size"])} for name, e in doc["files"].items()}
        return Manifest(
            prefix=prefix, files=files, meta=dict(doc.get("meta") or {}), created_at=float(doc.get("created_at") or 0.0)
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = f"{exc.__class__.__name__}: {exc}"
        raise ArtifactCorruptError(f"manifest {store.url(key)} is unreadable ({detail})") from exc


def fetch_verified(
    store: ArtifactStore, prefix: str, names: list[str] | None = None
) -> tuple[Manifest, dict[str, bytes]]:
    """Read the manifest under ``prefix`` and the files it names (or only ``names``),
    checking each one's size and sha256; ArtifactCorruptError on the first mismatch."""
    manifest = read_manifest(store, prefix)
    wanted = names if names is not None else sorted(manifest.files)
    out: dict[str, bytes] = {}
    for name in wanted:
        if name not in manifest.files:
            raise ArtifactCorruptError(f"{store.url(join(prefix, MANIFEST))} names no file {name!r}")
        key = join(prefix, name)
        try:
            data = store.get_bytes(key)
        except ArtifactNotFoundError as exc:
            raise ArtifactCorruptError(f"{store.url(key)} is named in its manifest but missing") from exc
        entry = manifest.files[name]
        if len(data) != entry["size"] or sha256_hex(data) != entry["sha256"]:
            raise ArtifactCorruptError(
                f"{store.url(key)} fails its checksum ({len(data)} bytes, manifest says "
                f"{entry['size']}); it is damaged or was overwritten"
            )
        out[name] = data
    return manifest, out
