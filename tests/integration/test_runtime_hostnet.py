"""The runtimes' host networking and mounts, on a real Docker engine and real processes (no
cluster): a host-networked container publishes nothing, listens on the node's own ports, keeps
its hardening, and writes as uid 1000 into a mounted folder the runtime created, even one under
the home of the user running the node (root's home is 0700 inside the image); a taken port
refuses the start; the process runtime takes the same requests and finds the folder where it is."""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.core.errors import PortInUseError
from runner.core.mounts import CHECKPOINTS, MOUNT_ROOT, file_mount, to_container
from runner.core.states import ReplicaState
from runner.runtime import LaunchRequest, replica_key
from tests.conftest import docker_client_or_skip, wait_for

REPO = Path(__file__).resolve().parents[2]
# Listens on PORT on all interfaces of its network namespace, writes a file into the folder the
# file:// URI OUT names, then waits.
SERVE = (
    "import os, socket, time, urllib.parse; s = socket.socket(); s.bind(('0.0.0.0', int(os.environ['PORT']))); "
    "s.listen(); out = urllib.parse.urlsplit(os.environ['OUT']).path; "
    "open(out + '/hello.txt', 'w').write(str(os.getuid())); print('listening', flush=True); "
    "time.sleep(60)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(folder: Path, port: int, image: str = "runner/smoke:latest", **fields: Any) -> LaunchRequest:
    """A request that binds ``folder`` where runner binds a checkpoint folder, told as its URI
    inside, as the supervisor builds it (``runner.core.mounts``)."""
    wid = f"w-hn{uuid.uuid4().hex[:8]}"
    mount = file_mount(folder.as_uri(), CHECKPOINTS)
    assert mount is not None
    return LaunchRequest(
        key=replica_key(wid, 0, 1),
        workload_id=wid,
        replica_index=0,
        attempt=1,
        node="hostnet-test",
        image=image,
        command=["python", "-c", SERVE],
        env=to_container({"PORT": str(port), "OUT": folder.as_uri()}, [mount]),
        cpu=0.5,
        host_network=True,
        ports=[(port, "tcp")],
        mounts=[mount],
        **fields,
    )


@pytest.fixture
def home_tmp() -> Iterator[Path]:
    """A folder under the home of the user running the test, as ``~/.runner`` is. Run as root
    (as CI and the README run), it lies under /root, which every Debian image holds as
    ``drwx------ root``: a folder bound at its host path could not be reached by uid 1000."""
    base = Path.home() / ".cache" / "runner-tests"
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=base))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def docker_runtime(home_tmp: Path) -> Iterator[Any]:
    from runner.images import build_images
    from runner.runtime.docker import DockerRuntime

    rt = DockerRuntime("hostnet-test", client=docker_client_or_skip(), artifacts_dir=home_tmp)
    build_images(["smoke"], docker_client=rt.client, log=lambda _m: None)  # cached by content hash
    yield rt
    for status in rt.list():
        rt.remove(status.key)


@pytest.mark.docker
def test_published_ports_go_through_a_bridge_with_the_mtu_of_the_interface_they_are_published_on(
    docker_runtime: Any,
) -> None:
    """Ports published on loopback (MTU 65536): the container's side has the bridge's largest MTU,
    not Docker's fixed 1500, and its port still answers on the node."""
    from runner.runtime.docker import MAX_BRIDGE_MTU
    from runner.runtime.netif import mtu_of

    wid = f"w-br{uuid.uuid4().hex[:8]}"
    show_mtu = (
        "import socket, time; print('mtu', open('/sys/class/net/eth0/mtu').read().strip(), flush=True); "
        "s = socket.socket(); s.bind(('0.0.0.0', 8000)); s.listen(); time.sleep(60)"
    )
    req = LaunchRequest(
        key=replica_key(wid, 0, 1),
        workload_id=wid,
        replica_index=0,
        attempt=1,
        node="hostnet-test",
        image="runner/smoke:latest",
        command=["python", "-c", show_mtu],
        cpu=0.5,
        ports=[(8000, "tcp")],
    )
    status = docker_runtime.start(req)
    expected = min(mtu_of("lo") or 0, MAX_BRIDGE_MTU)
    wait_for(lambda: f"mtu {expected}" in docker_runtime.logs(req.key), timeout_s=60, what="the container's MTU line")
    networks = docker_runtime.client.containers.get(f"runner-{req.key}").attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [f"runner-mtu{expected}"]
    host, _, port = wait_for(
        lambda: docker_runtime.status(req.key).ports.get("8000/tcp"), timeout_s=30, what="the published port"
    ).rpartition(":")
    assert host == "127.0.0.1" and status.handle
    wait_for(lambda: _connects(int(port)), timeout_s=30, what="the published port to answer")


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.docker
def test_a_host_networked_container_listens_on_the_node_and_writes_to_its_mount(
    docker_runtime: Any, home_tmp: Path
) -> None:
    folder = home_tmp / "artifacts" / "w-1"  # missing: the runtime creates it, writable for uid 1000
    port = free_port()
    req = request(folder, port)
    status = docker_runtime.start(req)
    assert status.state in (ReplicaState.RUNNING, ReplicaState.STARTING) and status.ports == {}
    wait_for(lambda: "listening" in docker_runtime.logs(req.key), timeout_s=60, what="the container to listen")
    with socket.create_connection(("127.0.0.1", port), timeout=5):  # the node's own port, nothing published
        pass
    assert (folder / "hello.txt").read_text() == "1000" and folder.stat().st_uid == 1000
    attrs = docker_runtime.client.containers.get(f"runner-{req.key}").attrs
    assert attrs["HostConfig"]["NetworkMode"] == "host" and not attrs["HostConfig"]["PortBindings"]
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"] and "no-new-privileges" in attrs["HostConfig"]["SecurityOpt"]
    assert [(m["Source"], m["Destination"], m["RW"]) for m in attrs["Mounts"]] == [
        (str(folder), f"{MOUNT_ROOT}/{CHECKPOINTS}", True)
    ]
    assert f"OUT=file://{MOUNT_ROOT}/{CHECKPOINTS}" in attrs["Config"]["Env"]

    # A second replica that wants the same port on this node is refused before it starts.
    with pytest.raises(PortInUseError, match=f"host port {port}/tcp is in use on node hostnet-test"):
        docker_runtime.start(request(home_tmp / "other", port))
    # The first one is adopted, not started again (the check does not apply to what already runs).
    assert docker_runtime.start(req).handle == status.handle
    assert docker_runtime.stop(req.key, grace_s=1).state == ReplicaState.STOPPED


def test_the_process_runtime_takes_the_same_request(tmp_path: Path) -> None:
    from runner.runtime.process import ProcessRuntime

    rt = ProcessRuntime("hostnet-test", state_dir=tmp_path / "state", workdir=REPO, artifacts_dir=tmp_path)
    folder = tmp_path / "artifacts" / "w-2"
    port = free_port()
    req = request(folder, port)
    req = LaunchRequest(**{**req.__dict__, "command": [sys.executable, "-c", SERVE]})
    rt.start(req)
    try:
        wait_for(lambda: "listening" in rt.logs(req.key), timeout_s=30, what="the process to listen")
        assert (folder / "hello.txt").exists()
        with pytest.raises(PortInUseError):
            rt.start(LaunchRequest(**{**req.__dict__, "key": replica_key(req.workload_id, 1, 1)}))
        # It was told the container's URI and found the host's folder: processes mount nothing.
        assert req.env["OUT"] == f"file://{MOUNT_ROOT}/{CHECKPOINTS}"
    finally:
        rt.remove(req.key)


@pytest.mark.docker
def test_nodes_sharing_an_engine_make_one_bridge_between_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Six node runtimes asking for the bridge at once get the same network, and only one exists."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from runner.runtime import docker as docker_runtime_module
    from runner.runtime.docker import DockerRuntime

    client = docker_client_or_skip()
    mtu = random.randint(20_000, 60_000)  # a name no other test or cluster uses
    monkeypatch.setattr(docker_runtime_module, "mtu_of", lambda _interface: mtu)
    runtimes = [
        DockerRuntime(f"bridge-test-{i}", client=client, artifacts_dir=Path(tempfile.gettempdir())) for i in range(6)
    ]
    try:
        with ThreadPoolExecutor(len(runtimes)) as pool:
            ids = list(pool.map(lambda rt: rt._bridge(), runtimes))
        made = client.networks.list(names=[f"runner-mtu{mtu}"])
        assert len(set(ids)) == 1 and [n.id for n in made] == ids[:1]
        assert made[0].attrs["Options"]["com.docker.network.driver.mtu"] == str(mtu)
    finally:
        for network in client.networks.list(names=[f"runner-mtu{mtu}"]):
            network.remove()


@pytest.mark.docker
def test_a_symlink_swapped_into_a_read_only_mount_after_its_check_binds_nothing_of_the_host(
    docker_runtime: Any, home_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of a service's model mount: the training job that owns the folder swaps it for a
    symlink to ``/`` after the runtime checked it and before the engine binds it. The swap is
    made at exactly that moment (right after the snapshot, before the container is made); the
    container must see the checkpoint, not the machine. The control: the engine itself does
    follow such a symlink when handed the path (what happened before snapshots)."""
    import docker

    import runner.runtime.base as base
    from runner.core.mounts import MODEL

    step = home_tmp / "acme" / "w-train" / "step-00000040"
    step.mkdir(parents=True)
    (step / "model.pt").write_bytes(b"weights")
    real_snapshot = base.snapshot

    def then_swap(source: Path, artifacts_dir: Path, key: str) -> Path:
        made = real_snapshot(source, artifacts_dir, key)
        step.rename(step.with_name("moved"))
        step.symlink_to("/")  # the attack, timed where the gap was
        return made

    monkeypatch.setattr(base, "snapshot", then_swap)
    wid = f"w-ro{uuid.uuid4().hex[:8]}"
    mount = file_mount(step.as_uri(), MODEL, read_only=True)
    assert mount is not None
    req = LaunchRequest(
        key=replica_key(wid, 0, 1),
        workload_id=wid,
        replica_index=0,
        attempt=1,
        node="hostnet-test",
        image="runner/smoke:latest",
        command=["sh", "-c", f"ls {MOUNT_ROOT}/{MODEL}; sleep 30"],
        env={},
        cpu=0.5,
        mounts=[mount],
    )
    docker_runtime.start(req)
    listed = wait_for(lambda: docker_runtime.logs(req.key) or None, timeout_s=60, what="the listing")
    assert listed == ["model.pt"], listed  # the checkpoint, not the machine's root
    docker_runtime.remove(req.key)

    # The control: bound by its path, the swapped folder is the machine's root in the container.
    engine = docker_runtime.client
    out = engine.containers.run(
        "runner/smoke:latest",
        ["ls", "/mnt/x"],
        mounts=[docker.types.Mount(target="/mnt/x", source=str(step), type="bind", read_only=True)],
        remove=True,
        user="1000:1000",
    )
    assert "etc" in out.decode().split(), out
