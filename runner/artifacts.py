"""A workload's artifacts as the control plane reads them: what ``runner artifacts ls/get`` show.

The artifacts of a training job are what it wrote under its checkpoint URI (the spec's
``checkpoint.uri`` or the network's ``file://`` store, plus the workload id): its checkpoints,
laid out as ``workloads/training/checkpoint.py`` describes. The control plane opens that URI
with the same store the trainer uses (``workloads.common.artifacts``); for ``s3://`` with the
workload's own ``AWS_*`` variables from its spec, so it reads the bucket the job wrote with the
tenant's credentials and endpoint, never with credentials of its own. ``file://`` stores are
read where the control plane runs: on one machine (CPU mode) that is where the job wrote them;
across hosts use ``s3://``.

Store errors become runner's named errors: a missing key ``NotFoundError``, a bad key
``UserError``, an unreachable or refusing store ``ArtifactStoreError``, each saying what to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.core.errors import ArtifactStoreError, NotFoundError, UserError
from workloads.common.artifacts import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactURIError,
    FileStore,
    check_key,
    open_store,
)
from workloads.training.checkpoint import LATEST, Checkpoints

#: Variables of a workload's spec env that reach its S3 store (boto3's own names).
S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")


def workload_store(uri: str, env: Mapping[str, str]) -> ArtifactStore:
    """The store at ``uri``; an ``s3://`` one gets a client built from the workload's env."""
    try:
        if not uri.startswith("s3://"):
            return open_store(uri)
        return open_store(uri, s3_client=_s3_client(env))
    except ArtifactURIError as exc:
        raise UserError(str(exc)) from None
    except ArtifactError as exc:
        raise ArtifactStoreError(str(exc)) from None


def _s3_client(env: Mapping[str, str]) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ArtifactStoreError(
            "reading s3:// artifacts needs boto3 where the control plane runs. To fix: pip install boto3"
        ) from None
    return boto3.client(
        "s3",
        endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
        region_name=env.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30),
    )


def _mapped(exc: ArtifactError) -> Exception:
    if isinstance(exc, ArtifactNotFoundError):
        return NotFoundError(f"{exc}. To fix: runner artifacts ls lists what is there")
    if isinstance(exc, ArtifactURIError):
        return UserError(str(exc))
    return ArtifactStoreError(str(exc))


def listing(store: ArtifactStore) -> dict[str, Any]:
    """Every object under the store, its checkpoints (complete or not) and ``latest.json``."""
    try:
        items = [i for i in store.list() if _inside(store, i.key)]
        steps = Checkpoints(store).steps()
        latest = json.loads(store.get_bytes(LATEST)) if any(i.key == LATEST for i in items) else None
    except ArtifactError as exc:
        raise _mapped(exc) from None
    except ValueError:  # latest.json is a hint for people; an unreadable one is not an error
        latest = None
    checkpoints = [
        {"step": step, "complete": complete, "uri": store.url(f"step-{step:08d}")}
        for step, complete in sorted(steps.items())
    ]
    return {
        "uri": store.uri,
        "latest": latest,
        "checkpoints": checkpoints,
        "items": [{"key": i.key, "size": i.size, "modified": i.modified, "uri": i.uri} for i in items],
    }


def _inside(store: ArtifactStore, key: str) -> bool:
    """Whether ``key`` of a local store is a regular file really under its folder. The folder is
    written by the tenant's container: a symlink there must not make the control plane (which
    may run as root) list or serve a file of the host."""
    if not isinstance(store, FileStore):
        return True
    path = store.root / key
    try:
        return not path.is_symlink() and path.resolve().is_relative_to(store.root.resolve()) and path.is_file()
    except OSError:
        return False


def local_path(store: ArtifactStore, key: str) -> Path | None:
    """The file behind ``key`` when the store is a local folder (served without a copy), else None."""
    if not isinstance(store, FileStore):
        return None
    key = _key(store, key)
    if not _inside(store, key):
        raise NotFoundError(f"no artifact {key!r} under {store.uri}. To fix: runner artifacts ls lists what is there")
    return store.root / key


def fetch(store: ArtifactStore, key: str, dest: Path) -> Path:
    """Download ``key`` to ``dest`` (written under a temporary name, then renamed)."""
    try:
        return store.get_file(_key(store, key), dest)
    except ArtifactError as exc:
        raise _mapped(exc) from None


def _key(store: ArtifactStore, key: str) -> str:
    try:
        return check_key(key, store.uri)
    except ArtifactURIError as exc:
        raise UserError(str(exc)) from None
