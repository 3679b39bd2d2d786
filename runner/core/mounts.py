"""Where a host folder lands inside a replica, and how ``file://`` URIs cross that line. Pure.

A ``file://`` artifact folder (a training job's checkpoints, the checkpoint an inference service
serves) is bound into the container at a fixed path of runner's own under ``/mnt/runner``, never
at its host path. At the host path the image may already hold something: Debian's ``/root`` is
``drwx------ root`` inside every image, so a checkpoint folder under root's home, bound at the
same path, was unreachable for the image's uid 1000 although the folder itself was its own. Docker
makes a missing mount point's parents itself (0755, root), so under ``/mnt/runner`` nothing the
image holds can get in the way, whatever ``RUNNER_HOME`` is, and no folder's permissions change.

Inside the container the URI names the mount point (``RUNNER_CHECKPOINT_URI=file:///mnt/runner/
checkpoints/``); outside, the host folder. The replica reports URIs as it sees them (the
checkpoint it resumed from, its final checkpoint), and the control plane reads them back through
the same mounts (``to_host``), so ``runner status``, the events and ``runner artifacts`` name the
host's URI, the one a later workload can be given. A runtime that cannot mount (host processes)
sees the host's files directly: it reads the request's env through ``to_host`` too.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

#: The folder under which every bound host folder lands inside a container.
MOUNT_ROOT = "/mnt/runner"
#: Mount names: a training job's checkpoint folder; the checkpoint an inference service serves.
CHECKPOINTS = "checkpoints"
MODEL = "model"


@dataclass(frozen=True)
class Mount:
    """A host folder bound into the replica at ``target`` (normally ``MOUNT_ROOT/<name>``)."""

    source: str  # absolute path on the node
    target: str  # absolute path inside the container
    read_only: bool = False


def file_mount(uri: str, name: str, *, read_only: bool = False) -> Mount | None:
    """The mount a ``file://`` URI's folder needs, at ``MOUNT_ROOT/name``; None for any other
    scheme (``s3://`` is reached over the network). ``to_container`` gives the URI inside."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        return None
    source = posixpath.normpath(unquote(parts.path))
    return Mount(source=source, target=f"{MOUNT_ROOT}/{name}", read_only=read_only)


def _move(uri: str, prefix_from: str, prefix_to: str) -> str | None:
    """``uri`` with the folder ``prefix_from`` replaced by ``prefix_to``, if it lies in it."""
    path = unquote(urlsplit(uri).path)
    if path != prefix_from and not path.startswith(prefix_from.rstrip("/") + "/"):
        return None
    return "file://" + quote(prefix_to + path[len(prefix_from) :])


def _rewrite(value: Any, moves: list[tuple[str, str]]) -> Any:
    """``value`` (nested dicts, lists, strings) with each ``file://`` URI inside a folder of
    ``moves`` (from, to) moved to the same place under the other."""
    if isinstance(value, str):
        if value.startswith("file://"):
            for prefix_from, prefix_to in moves:
                moved = _move(value, prefix_from, prefix_to)
                if moved is not None:
                    return moved
        return value
    if isinstance(value, Mapping):
        return {k: _rewrite(v, moves) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, moves) for v in value]
    return value


def to_container(value: Any, mounts: Iterable[Mount]) -> Any:
    """``value`` (a launch request's env) with every ``file://`` URI inside a mount's source
    naming the same place under its target: what the replica must be told."""
    return _rewrite(value, [(m.source, m.target) for m in mounts])


def to_host(value: Any, mounts: Iterable[Mount]) -> Any:
    """``value`` (a report) with every ``file://`` URI inside a mount's target rewritten to the
    same place under its source. Anything else is unchanged, so reports of a process replica
    (already host URIs) and ``s3://`` URIs pass as they are. A runtime without mounts (host
    processes) reads a request's env through it as well: its replica sees the host's files."""
    return _rewrite(value, [(m.target, m.source) for m in mounts])
