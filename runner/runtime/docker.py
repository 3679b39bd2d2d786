"""DockerRuntime: replicas as containers through the docker SDK.

The container *is* the record: its name is the replica key and its labels carry workload,
replica, attempt and node, so ``start`` for a key that already has a container adopts it and
``list`` reconciles from the daemon itself. Containers are hardened (all capabilities dropped,
no new privileges, a pid limit) and limited to the CPU and memory the spec asked for.

Networking is a bridge with the requested ports published on ``publish_host``, or, when a
request asks for it, the node's own namespace (``network_mode="host"``: nothing is published,
the ports are checked free instead). The bridge is runner's own (``runner-mtu<N>``), with the MTU
of the interface the ports are published on, not Docker's default bridge at a fixed 1500: a
mismatched MTU is a known Docker trap (a 1400-MTU uplink drops full-size packets), and here, with
ports on loopback (MTU 65536), a 1500-MTU bridge stalled a game stream's 65 KB frames for 60-90
ms now and then (input-to-frame p95 78-89 ms against 25 ms on a bridge with loopback's MTU,
bench/gaming.py). Mounts are bind mounts whose missing sources are created
writable for the image's user first.

Images: on a node that shares the head's engine (CPU mode) they are there. A provider host has an
engine of its own: an image it lacks is pulled from the network's registry (``registry``,
``runner/registry.py``) on first use and tagged under the name the spec gave, so the next replica
finds it. Meanwhile ``status`` reports the replica PULLING with the bytes fetched so far, and a
``stop`` ends the pull; afterwards the images this node pulled are evicted, least recently used
first, past its cache budget (``runtime.docker_images``).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.errors import ImageError, RuntimeUnavailableError
from runner.core.guard import WORKLOAD_UID
from runner.core.states import ReplicaState
from runner.runtime.base import (
    LABEL_KEY,
    LABEL_MANAGED,
    LABEL_NODE,
    LaunchRequest,
    ReplicaStatus,
    Runtime,
    check_host_ports,
    prepare_mounts,
)
from runner.runtime.docker_images import NodeImages, PullCancelled, parse_time
from runner.runtime.imagecache import GB, PullProgress
from runner.runtime.logtail import LineBuffer, StreamTail
from runner.runtime.netif import interface_of, mtu_of
from runner.runtime.snapshots import drop_snapshot
from runner.settings import Settings

if TYPE_CHECKING:  # docker is imported lazily: `import runner` stays fast on any machine
    import docker

CONTAINER_PREFIX = "runner-"
#: The largest MTU a Linux bridge and its veth pairs take (loopback's 65536 is one more).
MAX_BRIDGE_MTU = 65535
#: Which control plane's containers these are (a hash of its home): two CPU-mode clusters on one
#: machine share the engine and name their nodes alike, and must never list, reconcile away or
#: clean up each other's containers. A container without it (made by hand) is everyone's.
LABEL_SCOPE = "runner.scope"
#: A replica's writable scratch, its HOME: a tmpfs, since the root filesystem is read-only.
SCRATCH = "/tmp"


def scratch_mb(memory_mb: int | None) -> int:
    """The scratch's size: half the replica's memory limit (what it writes there is charged to
    that limit anyway), 512 MiB for one without."""
    return max(64, memory_mb // 2) if memory_mb else 512


#: Each of the (two) files of a container's output the engine keeps on the machine's disk: a
#: replica that writes without end cannot fill the provider's disk. Larger than what the runner
#: keeps of it (``logtail.MAX_LOG_BYTES``), so a read from the start sees everything kept.
ENGINE_LOG_FILE_MB = 64


def docker_client(timeout_s: float | None = 60) -> "docker.DockerClient":
    """A client for the local engine, or RuntimeUnavailableError saying how to get one.
    ``timeout_s=None``: reads never time out (for followed log streams, silent for any time)."""
    import docker

    try:
        client = docker.from_env(timeout=None if timeout_s is None else int(timeout_s), max_pool_size=64)
        client.ping()
        return client
    except Exception as exc:  # the SDK raises several types for "no engine"
        raise RuntimeUnavailableError(
            f"no Docker engine answers ({exc.__class__.__name__}). "
            "To fix: install and start one (apt-get install docker.io; dockerd &), or use --runtime process."
        ) from None


#: How long a ``stop`` waits for a start that has not yet created its container (a pull ends at
#: the engine's next progress event; a stalled one is left to end by itself, and creates nothing).
STOP_WAITS_FOR_START_S = 30.0


@dataclass
class _Start:
    """A start in flight: what ``status`` reports meanwhile, whether a ``stop`` cancelled it,
    and its outcome for a second ``start`` of the same key (a restarted control plane asks again).
    ``cancelled`` and ``committed`` change under the runtime's lock: a start either sees the stop
    before it creates its container (and creates none), or has committed, and the stop waits for
    the container to stop it as any other."""

    image: str
    progress: PullProgress | None = None  # set while the engine pulls the image
    cancelled: bool = False
    committed: bool = False  # past the last look at ``cancelled``: the container will exist
    done: threading.Event = field(default_factory=threading.Event)
    outcome: ReplicaStatus | None = None
    error: BaseException | None = None


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(
        self,
        node: str,
        *,
        artifacts_dir: Path,
        publish_host: str = "127.0.0.1",
        client: Any = None,
        scope: str = "",
        registry: str = "",
        image_cache_gb: float = Settings.image_cache_gb,
    ) -> None:
        self.node = node
        self.artifacts_dir = Path(artifacts_dir)
        self.scope = scope
        self.publish_host = publish_host
        self.registry = registry
        self.client = client or docker_client()
        self.images = NodeImages(self.client, registry=registry, budget_bytes=int(image_cache_gb * GB))
        self._bridge_id: str | None = None
        self._stream_client: Any = None  # made on first use: follows log streams, never times out
        self._tails: dict[str, StreamTail] = {}
        self._tails_lock = threading.Lock()
        self._starts: dict[str, _Start] = {}
        self._starts_lock = threading.Lock()

    def _bridge(self) -> str | None:
        """The id of the bridge network for containers with published ports, made on first use:
        ``runner-mtu<N>`` with the MTU of the interface that holds ``publish_host``. None (Docker's
        default bridge) when ports are published on every interface, where no one MTU is right.
        Nodes sharing an engine share the network (should two of that name exist, made by hand,
        every node picks the same one: the lowest id)."""
        if self._bridge_id is not None:
            return self._bridge_id or None
        interface = interface_of(self.publish_host) if self.publish_host not in ("", "0.0.0.0", "::") else None
        mtu = mtu_of(interface) if interface else None
        if not mtu:
            self._bridge_id = ""
            return None
        mtu = min(mtu, MAX_BRIDGE_MTU)
        name = f"runner-mtu{mtu}"
        # The engine may take two networks of one name (check_duplicate is not honoured by every
        # version), so nodes that share it make the network under one host-wide lock.
        lock = os.open(Path(tempfile.gettempdir()) / "runner-docker-networks.lock", os.O_RDONLY | os.O_CREAT, 0o644)
        try:  # (read-only: any user may lock a file another user made)
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = self.client.networks.list(names=[name])
            if not any(n.name == name for n in found):
                self.client.networks.create(
                    name,
                    driver="bridge",
                    labels={LABEL_MANAGED: "true"},
                    options={"com.docker.network.driver.mtu": str(mtu)},
                )
                found = self.client.networks.list(names=[name])
        finally:
            os.close(lock)  # releases the lock
        self._bridge_id = min(n.id for n in found if n.name == name)
        return self._bridge_id

    # -- helpers -------------------------------------------------------------------------
    def _get(self, key: str) -> Any | None:
        import docker

        try:
            return self.client.containers.get(CONTAINER_PREFIX + key)
        except docker.errors.NotFound:
            return None

    def _status(self, key: str, container: Any | None) -> ReplicaStatus:
        import docker

        if container is not None:
            try:
                container.reload()
            except docker.errors.NotFound:  # removed since it was looked up
                container = None
        if container is None:
            return ReplicaStatus(key=key, state=ReplicaState.LOST, error="no container under this key")
        st = container.attrs["State"]
        ports = {
            port: f"{binds[0]['HostIp']}:{binds[0]['HostPort']}"
            for port, binds in (container.attrs["NetworkSettings"].get("Ports") or {}).items()
            if binds
        }
        status = ReplicaStatus(
            key=key,
            state=ReplicaState.RUNNING,
            handle=container.id,
            started_at=parse_time(st.get("StartedAt")),
            ports=ports,
        )
        if st["Status"] == "created":
            status.state = ReplicaState.STARTING
        elif st["Status"] in ("exited", "dead"):
            status.state = ReplicaState.EXITED
            status.exit_code = int(st.get("ExitCode", -1))
            status.finished_at = parse_time(st.get("FinishedAt"))
            status.error = st.get("Error", "") or ("killed: out of memory" if st.get("OOMKilled") else "")
        return status

    # -- interface -------------------------------------------------------------------------
    def start(self, request: LaunchRequest) -> ReplicaStatus:
        with self._starts_lock:
            pending = self._starts.get(request.key)
            first = pending is None
            if pending is None:
                pending = self._starts[request.key] = _Start(image=request.image)
        if not first:  # the same key is being started (and maybe pulled): its outcome is this one's
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.outcome or self.status(request.key)
        try:
            pending.outcome = self._start(request, pending)
            return pending.outcome
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._starts_lock:
                self._starts.pop(request.key, None)
            pending.done.set()

    def _start(self, request: LaunchRequest, pending: _Start) -> ReplicaStatus:
        import docker

        existing = self._get(request.key)
        if existing is not None:  # adopt: never start the same key twice
            self._commit(pending)
            if existing.status == "created":
                existing.start()
            return self._status(request.key, existing)
        kwargs = self._create_args(request)
        image = self.images.reference(request.image, request.image_digest)
        pulled = False
        try:
            try:
                self._commit(pending)  # the image is here (most starts): create at once
                container = self.client.containers.create(image, **kwargs)
            except docker.errors.ImageNotFound:
                with self._starts_lock:  # no container yet: a stop may cancel the pull
                    pending.committed = False
                pending.progress = PullProgress()
                pulled = self.images.pull(
                    request.image, request.image_digest, pending.progress, lambda: pending.cancelled
                )
                if not pulled:
                    raise
                self._commit(pending)
                container = self.client.containers.create(image, **kwargs)
        except PullCancelled:
            return ReplicaStatus(key=request.key, state=ReplicaState.STOPPED, error="stopped before it started")
        except docker.errors.ImageNotFound:
            where = f" nor in the registry {self.registry}" if self.registry else ""
            fix = "runner images push (on the head)" if self.registry else "runner images build"
            raise ImageError(f"image {image!r} is not on node {self.node}{where}. To fix: {fix}") from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a concurrent start of the same key won the race: adopt
                return self._status(request.key, self._get(request.key))
            raise
        finally:
            pending.progress = None
        container.start()
        if pulled:
            self.images.evict_soon(self._images_starting)
        else:
            self.images.touch(request.image, request.image_digest)
        return self._status(request.key, container)

    def _commit(self, pending: _Start) -> None:
        """The last look at a stop before the container is made: PullCancelled if one came (the
        pull's own name for it: a stop before the start made its container)."""
        with self._starts_lock:
            if pending.cancelled:
                raise PullCancelled(pending.image)
            pending.committed = True

    def _images_starting(self) -> set[str]:
        """Images of starts in flight here: no container holds them yet, and none may be evicted."""
        with self._starts_lock:
            return {pending.image for pending in self._starts.values()}

    def _create_args(self, request: LaunchRequest) -> dict[str, Any]:
        import docker

        kwargs: dict[str, Any] = {
            "name": CONTAINER_PREFIX + request.key,
            "command": request.command or None,
            # HOME on the scratch: the root filesystem is read-only (an image's own HOME with it).
            "environment": {"HOME": SCRATCH, **request.env},
            "labels": {**request.labels(), **({LABEL_SCOPE: self.scope} if self.scope else {})},
            "detach": True,
            "nano_cpus": int(request.cpu * 1e9),
            # The images' own user, whatever an image says: the machine's guard knows workloads by it
            # (a host-networked container's packets are the machine's own, told apart by their user).
            "user": f"{WORKLOAD_UID}:{WORKLOAD_UID}",
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": 4096,
            "init": True,  # a real PID 1 forwards SIGTERM and reaps zombies
            # Nothing of the image can be changed: a replica writes to its scratch (a tmpfs,
            # charged to its own memory limit) and to the folders bound for it, and nowhere else.
            "read_only": True,
            "tmpfs": {SCRATCH: f"rw,nosuid,nodev,size={scratch_mb(request.memory_mb)}m"},
            # The engine's own record of its output, on the machine's disk: at most two files of
            # ENGINE_LOG_FILE_MB (the runner keeps far less: logtail.MAX_LOG_BYTES).
            "log_config": docker.types.LogConfig(
                type="json-file", config={"max-size": f"{ENGINE_LOG_FILE_MB}m", "max-file": "2"}
            ),
        }
        if request.memory_mb:
            kwargs["mem_limit"] = f"{request.memory_mb}m"
        if request.host_network:
            check_host_ports(request, self.node)
            kwargs["network_mode"] = "host"
        elif request.ports:
            kwargs["ports"] = {f"{port}/{proto}": (self.publish_host, None) for port, proto in request.ports}
            if bridge := self._bridge():
                kwargs["network"] = bridge
        if request.mounts:
            kwargs["mounts"] = [
                docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                for m in prepare_mounts(request.mounts, self.artifacts_dir, snapshot_key=request.key)
            ]
        if request.gpus and request.real_gpus:
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=request.gpus, capabilities=[["gpu"]])]
        return kwargs

    def status(self, key: str) -> ReplicaStatus:
        with self._starts_lock:
            pending = self._starts.get(key)
        progress = pending.progress if pending is not None else None
        if progress is not None:
            done, total = progress.bytes
            return ReplicaStatus(key=key, state=ReplicaState.PULLING, pull_done_bytes=done, pull_total_bytes=total)
        return self._status(key, self._get(key))

    def wait(self, key: str, timeout_s: float) -> ReplicaStatus:
        container = self._get(key)
        if container is None:
            return self._status(key, None)
        try:
            container.wait(timeout=timeout_s)
        except Exception:  # requests' ReadTimeout / ConnectionError: still running
            pass
        return self._status(key, container)

    def logs(self, key: str, start_line: int = 0, final: bool = False) -> list[str]:
        """From a thread following the container's log stream (``logtail``): a poll costs no
        engine call. The thread starts on the first read, and again (reading the log from its
        start once) when its stream broke off or lines it dropped are asked for. The final read
        takes the engine's whole record once instead: a followed stream can end at the
        container's exit before the engine has its last, unterminated line (Docker 20.10)."""
        if final:
            with self._tails_lock:
                self._tails.pop(key, None)
            container = self._get(key)
            if container is None:
                return []
            buffer = LineBuffer(skip=start_line)
            for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=False):
                buffer.feed(chunk)  # streamed: the buffer keeps what is asked for, within its limits
            buffer.close()
            return buffer.read(start_line) or []
        with self._tails_lock:
            tail = self._tails.get(key)
            if tail is None or tail.failed or start_line < tail.buffer.base:
                container = self._get(key)
                if container is None:
                    self._tails.pop(key, None)
                    return []
                tail = self._tails[key] = self._follow(container, skip=start_line)
        return tail.buffer.read(start_line) or []

    def _follow(self, container: Any, skip: int) -> StreamTail:
        if self._stream_client is None:
            self._stream_client = docker_client(timeout_s=None)
        api, ident = self._stream_client.api, container.id
        return StreamTail(
            lambda: api.logs(ident, stdout=True, stderr=True, stream=True, follow=True),
            skip=skip,
            name=f"logs {container.name}",
        )

    def stop(self, key: str, grace_s: float = 10.0) -> ReplicaStatus:
        with self._starts_lock:
            pending = self._starts.get(key)
            committed = pending is not None and pending.committed
            if pending is not None and not committed:  # pulling, say: its start makes no container
                pending.cancelled = True
        if pending is not None:
            pending.done.wait(timeout=None if committed else STOP_WAITS_FOR_START_S)
            if not committed:
                return ReplicaStatus(key=key, state=ReplicaState.STOPPED, error="stopped before it started")
        container = self._get(key)
        if container is None:
            return self._status(key, None)
        was_running = container.status in ("running", "created")
        container.stop(timeout=int(max(grace_s, 0)))
        status = self._status(key, container)
        if was_running:
            status.state = ReplicaState.STOPPED
        return status

    def remove(self, key: str) -> None:
        with self._tails_lock:
            self._tails.pop(key, None)
        container = self._get(key)
        if container is not None:
            container.remove(force=True)
        drop_snapshot(self.artifacts_dir, key)

    def list(self) -> list[ReplicaStatus]:
        containers = self.client.containers.list(
            all=True, filters={"label": [f"{LABEL_NODE}={self.node}"]}, ignore_removed=True
        )  # one removed meanwhile is not an error
        statuses = [
            self._status(c.labels[LABEL_KEY], c)
            for c in containers
            if LABEL_KEY in c.labels and c.labels.get(LABEL_SCOPE, self.scope) == self.scope
        ]
        return [st for st in statuses if st.state != ReplicaState.LOST]  # LOST: removed since it was listed
