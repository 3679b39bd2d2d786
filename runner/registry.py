"""The network's image registry on the head, and pushing runner's images to it.

Provider hosts have engines of their own, so the workload images must reach them: the head runs
Debian's ``docker-registry`` (the CNCF distribution registry) and each host's engine pulls from it
on first use (``runtime.docker``). It listens on every interface of the head: providers reach it
at the advertised address (``Settings.registry``), and the head's own engine pushes to it over
loopback, the one place Docker speaks plain HTTP to a registry without being told to. A provider
host's engine is told with ``--insecure-registry``; a network that crosses the internet gives the
registry TLS instead (see the README's "Running a real network").
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from runner.core.errors import ClusterError, UserError
from runner.settings import Settings

#: The workload images providers run; the base and the root filesystem only build them.
WORKLOAD_IMAGES = ("smoke", "training", "inference", "gaming")


def port_of(settings: Settings) -> int:
    """The registry's port, from ``Settings.registry`` (``host:port``)."""
    try:
        return int(settings.registry.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise UserError(f"registry {settings.registry!r}: expected host:port, e.g. 10.0.0.1:5000") from None


def folder(settings: Settings) -> Path:
    return settings.home / "registry"


def start(settings: Settings) -> subprocess.Popen[bytes]:
    """``docker-registry serve`` with this home's storage, on every interface at the port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise ClusterError(
            "the head serves images from Debian's docker-registry, which is not installed. "
            "To fix: apt-get install docker-registry (scripts/setup.sh does)"
        )
    root = folder(settings)
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n  delete: {{enabled: true}}\n"
        f"http:\n  addr: 0.0.0.0:{port_of(settings)}\n"
    )
    log = open(settings.logs_dir / "registry.log", "ab")
    return subprocess.Popen(
        [binary, "serve", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_until_up(settings: Settings, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    url = f"http://127.0.0.1:{port_of(settings)}/v2/"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(f"the registry exited early; see {settings.logs_dir / 'registry.log'}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise ClusterError(f"the registry did not answer on {url} in {timeout_s:.0f}s")


def push(
    settings: Settings, names: list[str] | None = None, *, docker_client: Any = None, say: Callable[[str], None] = print
) -> dict[str, str]:
    """Push each workload image's tags (its content hash and ``latest``) to the registry; the
    manifest digest of each reference pushed (``runner/smoke:latest`` -> ``sha256:...``), which
    the control plane pins: nodes run that content and no other under that name. Layers the
    registry holds already are not sent again."""
    if not settings.registry:
        raise UserError("this home has no registry. To fix: runner up --advertise ADDR (the head of a network)")
    import docker

    client = docker_client or docker.from_env()
    local = f"127.0.0.1:{port_of(settings)}"
    pushed: dict[str, str] = {}
    for name in names or list(WORKLOAD_IMAGES):
        try:
            image = client.images.get(f"runner/{name}:latest")
        except docker.errors.ImageNotFound:
            raise UserError(f"image runner/{name}:latest is not built. To fix: runner images build {name}") from None
        for tag in sorted(t for t in image.tags if t.startswith(f"runner/{name}:")):
            repo, version = tag.rsplit(":", 1)
            image.tag(f"{local}/{repo}", version)
            started = time.monotonic()
            digest = ""
            for event in client.images.push(f"{local}/{repo}", version, stream=True, decode=True):
                if "error" in event:
                    raise ClusterError(f"pushing {tag} to {local}: {event['error']}")
                digest = str((event.get("aux") or {}).get("Digest") or digest)
            client.images.remove(f"{local}/{repo}:{version}", noprune=True)
            if not digest:
                raise ClusterError(f"pushing {tag} to {local}: the engine reported no manifest digest")
            say(f"pushed {tag} ({digest[:19]}) in {time.monotonic() - started:.1f}s")
            pushed[tag] = digest
    return pushed
