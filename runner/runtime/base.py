"""The runtime interface: how a node agent runs one replica.

Kept as small as SkyPilot keeps a cloud's provisioner: start, status, wait, logs, stop, remove,
list. Every replica is identified by a ``key`` that names the workload, the replica index and
the attempt; the runtime stores that key *on the thing it runs* (container labels, a state
folder for processes), so a restarted agent or control plane re-adopts what is running instead
of starting it again. ``start`` is idempotent for the same key.
"""

from __future__ import annotations

import abc
import errno
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from runner.core.errors import PortInUseError, UserError
from runner.core.mounts import Mount
from runner.core.states import ReplicaState
from runner.runtime.snapshots import snapshot

#: Label keys written on every container (and process state folder) runner starts.
LABEL_MANAGED = "runner.managed"
LABEL_WORKLOAD = "runner.workload"
LABEL_REPLICA = "runner.replica"
LABEL_ATTEMPT = "runner.attempt"
LABEL_NODE = "runner.node"
LABEL_KEY = "runner.key"


def replica_key(workload_id: str, index: int, attempt: int) -> str:
    """The one name of a replica attempt: container name, process folder, log stream."""
    return f"{workload_id}-r{index}-a{attempt}"


#: The uid runner's images run as (``images/base.Dockerfile``): mounted folders are made writable for it.
CONTAINER_UID = 1000


@dataclass(frozen=True)
class LaunchRequest:
    """Everything a runtime needs to start one replica; plain data so it crosses Ray."""

    key: str
    workload_id: str
    replica_index: int
    attempt: int
    node: str
    image: str
    command: list[str]
    #: The manifest digest the operator's push recorded for ``image``: the node runs that content
    #: from the network's registry, never what the tag names there now. Empty where the image is
    #: not the network's (a spec's own registry; CPU mode, whose nodes share the head's engine).
    image_digest: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cpu: float = 1.0
    memory_mb: int | None = None
    gpus: int = 0
    #: True only on a node with real GPUs: then the container gets a device request.
    real_gpus: bool = False
    #: Bridge networking: container ports published on the node. Host networking: ports the
    #: replica will listen on in the node's own namespace, checked free before it starts.
    ports: list[tuple[int, str]] = field(default_factory=list)
    #: Share the node's network namespace, publish nothing. For gangs whose members connect to
    #: each other on ports picked at run time (gloo's and NCCL's pair connections), which no
    #: port publishing can foresee.
    host_network: bool = False
    mounts: list[Mount] = field(default_factory=list)

    def labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_WORKLOAD: self.workload_id,
            LABEL_REPLICA: str(self.replica_index),
            LABEL_ATTEMPT: str(self.attempt),
            LABEL_NODE: self.node,
            LABEL_KEY: self.key,
        }


def prepare_mounts(mounts: list[Mount], artifacts_dir: Path, *, snapshot_key: str | None = None) -> list[Mount]:
    """Check each mount stays inside the node's artifact store, then create each missing
    writable source, owned by the image's user (root can chown) or else open to all, so the
    container's uid 1000 can write where it is told to. Returns the mounts to bind: with a
    ``snapshot_key`` (a container's), each read-only one is bound from its snapshot
    (``runtime.snapshots``), which no container can swap a symlink into before the engine binds it.

    Only folders under ``artifacts_dir`` are ever bound, and never through a symlink below it: a
    container may leave a symlink in its own folder where a later mount points, and following it
    would bind whatever it names (another tenant's checkpoints, /etc). Symlinks above the store
    (a home on another disk) are fine.
    """
    root = os.path.normpath(artifacts_dir)
    for mount in mounts:
        source = Path(mount.source)
        if not source.is_absolute() or not Path(mount.target).is_absolute():
            raise UserError(f"mount {mount.source} -> {mount.target}: both paths must be absolute")
        rel = os.path.relpath(os.path.normpath(source), root)
        if rel == ".." or rel.startswith(".." + os.sep):
            raise UserError(f"mount {mount.source}: outside this node's artifact store {root}; refusing to bind it")
        if os.path.realpath(source) != os.path.normpath(os.path.join(os.path.realpath(root), rel)):
            raise UserError(f"mount {mount.source}: the path goes through a symlink; refusing to bind it")
        if mount.read_only or source.exists():
            continue
        source.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(source, CONTAINER_UID, CONTAINER_UID)
            source.chmod(0o755)
        else:
            source.chmod(0o777)
    if snapshot_key is None:
        return list(mounts)
    return [
        replace(m, source=str(snapshot(Path(m.source), artifacts_dir, snapshot_key))) if m.read_only else m
        for m in mounts
    ]


def check_host_ports(request: LaunchRequest, node: str) -> None:
    """Under host networking, the ports a replica will listen on must be free on the node: a
    taken one fails the start at once with ``PortInUseError`` instead of a confused workload."""
    if not request.host_network:
        return
    for port, proto in request.ports:
        kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is no owner
            try:
                sock.bind(("0.0.0.0", port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise PortInUseError(
                    f"host port {port}/{proto} is in use on node {node}; "
                    "the runner places the gang again with another port"
                ) from None


@dataclass
class ReplicaStatus:
    """What a runtime knows about one replica attempt right now."""

    key: str
    state: ReplicaState
    exit_code: int | None = None
    handle: str = ""  # container id or pid
    error: str = ""
    #: Why a start failed, as data (a ``StartFailure`` value; "" when it did not): ``error`` is its words.
    start_failure: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    #: Published ports: container port/proto -> "host:port".
    ports: dict[str, str] = field(default_factory=dict)
    #: While PULLING: bytes of the image fetched and to fetch so far, over its layers.
    pull_done_bytes: int = 0
    pull_total_bytes: int = 0
    observed_at: float = field(default_factory=time.time)


class Runtime(abc.ABC):
    """Runs replicas on the node it belongs to."""

    name: str

    @abc.abstractmethod
    def start(self, request: LaunchRequest) -> ReplicaStatus:
        """Start the replica, or return the status of the one already started under that key."""

    @abc.abstractmethod
    def status(self, key: str) -> ReplicaStatus:
        """Current status; ``PULLING`` (with its bytes) while a ``start`` fetches the image,
        ``LOST`` when nothing is known under the key."""

    @abc.abstractmethod
    def wait(self, key: str, timeout_s: float) -> ReplicaStatus:
        """Block until the replica ends or ``timeout_s`` passes, then return its status."""

    @abc.abstractmethod
    def logs(self, key: str, start_line: int = 0, final: bool = False) -> list[str]:
        """Output lines from ``start_line`` on (stdout and stderr interleaved), only whole lines
        while the replica runs. ``final``: the replica has ended and this is the last read, so
        it must have all the output, a last line without a newline included (``logtail``)."""

    @abc.abstractmethod
    def stop(self, key: str, grace_s: float = 10.0) -> ReplicaStatus:
        """SIGTERM, then SIGKILL after ``grace_s``; the status afterwards."""

    @abc.abstractmethod
    def remove(self, key: str) -> None:
        """Forget the replica and free what it held (its container, its folder)."""

    @abc.abstractmethod
    def list(self) -> list[ReplicaStatus]:
        """Every replica this runtime started on this node, running or not."""
