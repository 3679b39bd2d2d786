"""A provider host's image cache on the real local Docker engine and a real registry (Debian's
docker-registry, started as ``runner up --advertise`` starts it): a missing image is pulled on
first use with the replica PULLING and its bytes counted, then RUNNING; a stop ends a pull and
makes no container; past the budget the least recently used image this node pulled is evicted,
never one a container uses nor one the node did not pull, judged from what the engine records
(a runtime made afresh, as after an agent restart, decides the same). And the attack on a
registry anyone can push to: a tag pushed over the operator's is never what a node runs, since
a node runs the network's images only by the operator's pinned digest.

No internet here: each test image is a ``docker import`` of a small tarball (the host's
``sleep`` with its libraries, and a few MB of random bytes so that every image is distinct and
its pull takes some bytes). The registry is reached through a relay in this test that can hold
the bytes back, so the pull is seen PULLING for certain, however fast loopback is.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner import registry
from runner.core.errors import ImageError
from runner.core.states import ReplicaState
from runner.runtime import LaunchRequest, replica_key
from runner.runtime.docker import CONTAINER_PREFIX, DockerRuntime
from runner.settings import Settings
from tests.conftest import docker_client_or_skip, free_ports, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

BLOB_BYTES = 3_000_000
SLEEP = shutil.which("sleep") or "/bin/sleep"
#: Bytes the relay lets through while held: the manifest and config, and a first piece of the layer.
HELD_AFTER = 256 * 1024


class Relay:
    """A TCP relay to the registry whose answers can be held after ``HELD_AFTER`` bytes."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.released = threading.Event()
        self.released.set()
        self._lock = threading.Lock()
        self._sent = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        with self._lock:
            self._sent = 0
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(65536):
                while answers and not self.released.is_set():
                    with self._lock:
                        room = HELD_AFTER - self._sent
                        if room > 0:
                            piece, data = data[:room], data[room:]
                            self._sent += len(piece)
                            dst.sendall(piece)
                    if not data:
                        break
                    self.released.wait(0.05)
                if data:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.release()
        self.sock.close()


def image_tarball(seed: str) -> bytes:
    """A root filesystem with ``/bin/sleep`` (and what it links) and ``BLOB_BYTES`` random bytes."""
    libs = [
        line.split("=>")[-1].split("(")[0].strip()
        for line in subprocess.run(["ldd", SLEEP], capture_output=True, text=True, check=True).stdout.splitlines()
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in [SLEEP, *(lib for lib in libs if lib.startswith("/"))]:
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
        blob = tarfile.TarInfo(f"blob-{seed}")
        blob.size = BLOB_BYTES
        tar.addfile(blob, io.BytesIO(os.urandom(BLOB_BYTES)))
    return buf.getvalue()


@pytest.fixture(scope="module")
def client() -> Any:
    return docker_client_or_skip()


@pytest.fixture(scope="module")
def network_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Relay]]:
    """The registry's address as this engine pushes to it, and a relay to it that nodes pull through."""
    if shutil.which("docker-registry") is None:
        pytest.skip("no docker-registry. To fix: apt-get install docker-registry (scripts/setup.sh does)")
    port = free_ports()[0]
    settings = Settings(home=tmp_path_factory.mktemp("registry-home"), registry=f"127.0.0.1:{port}")
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    proc = registry.start(settings)
    relay = None
    try:
        registry.wait_until_up(settings, proc, timeout_s=30)
        relay = Relay(port)
        yield settings.registry, relay
    finally:
        if relay is not None:
            relay.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def repo() -> str:
    """This run's own repository prefix: names no one else's images."""
    return f"cachetest-{uuid.uuid4().hex[:8]}"


class Published(dict[str, str]):
    """Test image name -> reference; ``digests``: reference -> the digest its push reported, which
    the control plane would have pinned (a node pulls the network's images only by digest)."""

    digests: dict[str, str]


@pytest.fixture(scope="module")
def published(client: Any, network_registry: tuple[str, Relay], repo: str) -> Iterator[Published]:
    """Images in the registry and not on the engine, by name; and one built here, never pushed."""
    address, _relay = network_registry
    names = Published()
    names.digests = {}
    for name in ("progress", "cancel", "a", "b", "c", "d"):
        ref = f"{repo}/{name}:1"
        names.digests[ref] = push_tarball(client, address, ref, image_tarball(name))  # its only layer goes too
        names[name] = ref
    local = f"{repo}/local:1"
    client.api.import_image_from_data(image_tarball("local"), repository=f"{repo}/local", tag="1")
    names["local"] = local
    yield names
    forget(client, repo)


def push_tarball(client: Any, address: str, reference: str, tarball: bytes) -> str:
    """Import ``tarball`` as ``reference``, push it to the registry at ``address``, remove it from
    this engine (the node must fetch every byte); the manifest digest the push reported."""
    repo, tag = reference.rsplit(":", 1)
    client.api.import_image_from_data(tarball, repository=f"{address}/{repo}", tag=tag)
    digest = ""
    for event in client.images.push(f"{address}/{repo}", tag, stream=True, decode=True):
        assert "error" not in event, event
        digest = (event.get("aux") or {}).get("Digest") or digest
    client.api.remove_image(f"{address}/{repo}:{tag}")
    assert digest.startswith("sha256:"), digest
    return digest


def forget(client: Any, repo: str, names: tuple[str, ...] = ()) -> None:
    """Remove this run's images (only ``names`` of them, if given), under every name they have."""
    for image in client.images.list():
        if any(f"{repo}/" in t and (not names or any(f"{repo}/{n}:" in t for n in names)) for t in image.tags):
            client.images.remove(image.id, force=True)


@pytest.fixture
def runtimes(client: Any, network_registry: tuple[str, Relay], tmp_path: Path) -> Iterator[list[DockerRuntime]]:
    """A factory's list: the runtimes a test made, whose containers go when it ends."""
    made: list[DockerRuntime] = []
    yield made
    for rt in made:
        for status in rt.list():
            rt.remove(status.key)


def node_runtime(
    runtimes: list[DockerRuntime], client: Any, relay: Relay, tmp_path: Path, cache_gb: float = 1e6
) -> DockerRuntime:
    """A provider node's runtime that pulls from the registry through the relay."""
    rt = DockerRuntime(
        "cache-test",
        client=client,
        artifacts_dir=tmp_path,
        registry=f"127.0.0.1:{relay.port}",
        scope="cache-test",
        image_cache_gb=cache_gb,
    )
    runtimes.append(rt)
    return rt


def sleeper(image: str, published: Published | None = None) -> LaunchRequest:
    """A replica that sleeps in ``image``, pinned to its pushed digest when ``published`` has one."""
    wid = f"w-ic{uuid.uuid4().hex[:8]}"
    return LaunchRequest(
        key=replica_key(wid, 0, 1),
        workload_id=wid,
        replica_index=0,
        attempt=1,
        node="cache-test",
        image=image,
        image_digest=published.digests.get(image, "") if published else "",
        command=[SLEEP, "300"],
        cpu=0.1,
    )


def in_background(fn: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn(*args)
        except BaseException as exc:  # handed to the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def layer_bytes(address: str, image: str) -> int:
    """What the registry says the image's layers weigh (compressed, as they are fetched)."""
    repo, tag = image.rsplit(":", 1)
    manifest = httpx.get(
        f"http://{address}/v2/{repo}/manifests/{tag}",
        timeout=10,
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    ).json()
    return sum(layer["size"] for layer in manifest["layers"])


def test_a_missing_image_is_pulled_with_progress_then_runs(
    client: Any,
    network_registry: tuple[str, Relay],
    published: Published,
    runtimes: list[DockerRuntime],
    tmp_path: Path,
) -> None:
    address, relay = network_registry
    rt = node_runtime(runtimes, client, relay, tmp_path)
    req = sleeper(published["progress"], published)
    relay.hold()
    thread, out = in_background(rt.start, req)
    status = wait_for(
        lambda: (s := rt.status(req.key)).state == ReplicaState.PULLING and s.pull_done_bytes > 0 and s,
        timeout_s=60,
        what="the replica PULLING with bytes fetched",
    )
    total = layer_bytes(address, published["progress"])
    assert status.pull_total_bytes == total > BLOB_BYTES / 2
    assert 0 < status.pull_done_bytes < total  # held: the layer is not all through
    assert status.started_at is None and thread.is_alive()
    relay.release()
    thread.join(60)
    assert "error" not in out, out.get("error")
    assert out["result"].state == ReplicaState.RUNNING and out["result"].started_at is not None
    assert rt.status(req.key).state == ReplicaState.RUNNING
    # Kept under the network's name too: that is how the node knows it pulled it.
    assert f"127.0.0.1:{relay.port}/{published['progress']}" in client.images.get(published["progress"]).tags


def test_a_stop_ends_the_pull_and_no_container_is_made(
    client: Any,
    network_registry: tuple[str, Relay],
    published: Published,
    runtimes: list[DockerRuntime],
    tmp_path: Path,
) -> None:
    _address, relay = network_registry
    rt = node_runtime(runtimes, client, relay, tmp_path)
    req = sleeper(published["cancel"], published)
    relay.hold()
    starter, started = in_background(rt.start, req)
    wait_for(lambda: rt.status(req.key).state == ReplicaState.PULLING, timeout_s=60, what="the replica PULLING")
    stopper, stopped = in_background(rt.stop, req.key, 1.0)
    wait_for(lambda: rt._starts[req.key].cancelled, timeout_s=30, what="the stop to reach the start")
    relay.release()  # the engine's next event: the pull sees the stop
    starter.join(60)
    stopper.join(60)
    assert started["result"].state == ReplicaState.STOPPED and started["result"].started_at is None
    assert stopped["result"].state == ReplicaState.STOPPED
    assert rt.status(req.key).state == ReplicaState.LOST  # no container under its key, ever


def test_past_the_budget_the_least_recently_used_pulled_image_goes(
    client: Any,
    network_registry: tuple[str, Relay],
    published: Published,
    runtimes: list[DockerRuntime],
    tmp_path: Path,
) -> None:
    _address, relay = network_registry
    relay.release()
    forget(client, published["a"].split("/")[0], ("progress", "cancel"))  # the other tests': older, unused
    rt = node_runtime(runtimes, client, relay, tmp_path)  # no budget to speak of yet
    a = sleeper(published["a"], published)
    assert rt.start(a).state == ReplicaState.RUNNING  # a keeps running: in use, and used longest ago
    for name in ("b", "d"):  # used and done with, b before d
        req = sleeper(published[name], published)
        assert rt.start(req).state == ReplicaState.RUNNING
        rt.stop(req.key, grace_s=0)
        rt.remove(req.key)
    # An agent restart: a fresh runtime knows only what the engine records.
    images = {i.id: i for i in node_runtime(runtimes, client, relay, tmp_path).images.cached(set())[0]}
    ids = {name: client.images.get(published[name]).id for name in ("a", "b", "d", "local")}
    assert images[ids["b"]].last_used < images[ids["d"]].last_used
    assert images[ids["a"]].in_use and not images[ids["b"]].in_use
    assert images[ids["b"]].pulled and not images[ids["local"]].pulled
    # A budget that c's pull overshoots by less than b frees: b goes, and only b.
    repo = published["a"].split("/")[0]
    before = others_bytes(client, rt, repo)
    _images, total = rt.images.cached(set())
    rt = node_runtime(runtimes, client, relay, tmp_path, cache_gb=(total + images[ids["b"]].unique_bytes // 2) / 1e9)
    c = sleeper(published["c"], published)
    assert rt.start(c).state == ReplicaState.RUNNING
    rt.images.evict(lambda: set())  # the round the start began, done here (the same round twice is no harm)
    left = {i.id for i in client.images.list()}
    assert {ids["a"], ids["local"], client.images.get(published["c"]).id} <= left  # in use; not pulled
    if others_bytes(client, rt, repo) == before:
        assert ids["b"] not in left and ids["d"] in left
        assert rt.images.evict(lambda: set()) == []  # within budget now: nothing more goes
    else:  # someone else's images came or went on this shared engine meanwhile: the order still holds
        assert ids["d"] not in left or ids["b"] not in left or rt.images.cached(set())[1] <= rt.images.budget_bytes


def others_bytes(client: Any, rt: DockerRuntime, repo: str) -> int:
    """The engine's image bytes that are not this run's images (their one layer each is theirs alone)."""
    ours = {i.id for i in client.images.list() if any(f"{repo}/" in t for t in i.tags)}
    images, total = rt.images.cached(set())
    return total - sum(i.unique_bytes for i in images if i.id in ours)


def tag_digest(address: str, reference: str) -> str:
    """The digest the registry's tag names now (its own header, not the engine's view)."""
    repo, tag = reference.rsplit(":", 1)
    answer = httpx.get(
        f"http://{address}/v2/{repo}/manifests/{tag}",
        timeout=10,
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    answer.raise_for_status()
    return answer.headers["Docker-Content-Digest"]


def test_a_tag_pushed_over_the_operators_is_never_what_a_node_runs(
    client: Any, network_registry: tuple[str, Relay], repo: str, runtimes: list[DockerRuntime], tmp_path: Path
) -> None:
    address, relay = network_registry
    relay.release()
    reference = f"{repo}/pinned:1"
    operators = push_tarball(client, address, reference, image_tarball("operator"))
    # The attack: anyone who reaches the registry pushes an image of their own under that name.
    attackers = push_tarball(client, address, reference, image_tarball("attacker"))
    assert tag_digest(address, reference) == attackers != operators
    rt = node_runtime(runtimes, client, relay, tmp_path)
    source = f"127.0.0.1:{relay.port}/{repo}/pinned"
    try:
        # Unpinned, the node pulls nothing of the network's by tag: refused before any pull.
        with pytest.raises(ImageError, match="no digest pinned"):
            rt.start(sleeper(reference))
        assert not [i for i in client.images.list() if any(t.startswith(source) for t in i.tags)]
        # Pinned: the operator's content, fetched by digest and checked by the engine.
        first = replace(sleeper(reference), image_digest=operators)
        assert rt.start(first).state == ReplicaState.RUNNING
        ran = client.containers.get(CONTAINER_PREFIX + first.key).image
        assert f"{source}@{operators}" in ran.attrs["RepoDigests"]
        assert ran.id == client.images.get(reference).id  # the spec's name now means the operator's
        # The attacker's image on this engine under the spec's name and the registry's (pulled by
        # tag before pins, say): a pinned start still runs the operator's.
        client.api.pull(source, tag="1")
        client.api.tag(f"{source}:1", f"{repo}/pinned", "1")
        assert client.images.get(reference).id != ran.id
        second = replace(sleeper(reference), image_digest=operators)
        assert rt.start(second).state == ReplicaState.RUNNING
        assert client.containers.get(CONTAINER_PREFIX + second.key).image.id == ran.id
        assert client.images.get(reference).id == ran.id  # and the name moved back to it
        # A digest the registry does not hold is not found: no falling back to the tag.
        missing = replace(sleeper(reference), image_digest="sha256:" + "0" * 64)
        with pytest.raises(ImageError, match="is not on node"):
            rt.start(missing)
    finally:
        for status in rt.list():
            rt.remove(status.key)
        forget(client, repo, ("pinned",))
