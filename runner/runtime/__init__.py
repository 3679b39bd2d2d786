"""Runtimes: how a node runs a replica. An explicit registry that fails loudly.

``make_runtime("auto", ...)`` picks Docker when an engine answers, else processes; the choice is
reported so the CLI can say once, clearly, that Docker is absent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from runner.core.errors import RuntimeUnavailableError, UserError
from runner.runtime.base import LaunchRequest, ReplicaStatus, Runtime, replica_key

RUNTIME_NAMES = ("auto", "docker", "process")

__all__ = ["LaunchRequest", "ReplicaStatus", "Runtime", "make_runtime", "replica_key", "RUNTIME_NAMES"]


def docker_available() -> bool:
    from runner.runtime.docker import docker_client

    try:
        docker_client(timeout_s=5)
        return True
    except RuntimeUnavailableError:
        return False


def runtime_scope(state_dir: Path) -> str:
    """One control plane's mark on its containers: its replicas folder is unique to its home."""
    return hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:12]


def make_runtime(
    name: str,
    *,
    node: str,
    state_dir: Path,
    workdir: Path,
    artifacts_dir: Path,
    publish_host: str = "127.0.0.1",
    registry: str = "",
    image_cache_gb: float | None = None,
) -> Runtime:
    """Build the named runtime for ``node``; ``auto`` prefers Docker. ``publish_host``: the node's
    own address, where replicas' ports are published; ``registry``: where its engine pulls images;
    ``image_cache_gb``: what the engine keeps of the images it pulled (None: the default)."""
    if name not in RUNTIME_NAMES:
        raise UserError(f"unknown runtime {name!r}; known runtimes: {', '.join(RUNTIME_NAMES)}")
    if name == "auto":
        name = "docker" if docker_available() else "process"
    if name == "docker":
        from runner.runtime.docker import DockerRuntime

        cache = {} if image_cache_gb is None else {"image_cache_gb": image_cache_gb}
        return DockerRuntime(
            node,
            scope=runtime_scope(state_dir),
            artifacts_dir=artifacts_dir,
            publish_host=publish_host,
            registry=registry,
            **cache,
        )
    from runner.runtime.process import ProcessRuntime

    return ProcessRuntime(node, state_dir=state_dir, workdir=workdir, artifacts_dir=artifacts_dir)
