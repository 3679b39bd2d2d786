"""A tenant's container against the machine it runs on (issue 14, point 7): the machine's guard
closes every port of its Ray node (the node agent is one of its workers) to both kinds of
container, a bridged one and a host-networked one, and the link-local metadata range; the node's
token file is not in any container. A provider host of the harness, joined with `runner node join`
(which installs the guard), attacked by a tenant's job and by a container the runtime makes."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.hosts import Host
from harness.network import Network
from harness.runner_net import Head, running_head
from tests.conftest import free_ports, wait_for
from tests.integration.test_workloads import smoke
from tests.support.hosts import engine_events, host_processes, is_ray, wait_job

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(600)]

HOSTS = {"host-a": ("barn-a", "eu-west", "DE")}


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    with Network(Path(tempfile.mkdtemp(prefix="runner-mh-guard-")), list(HOSTS), registry_port=free_ports()[0]) as n:
        yield n


@pytest.fixture(scope="module")
def head(net: Network) -> Iterator[Head]:
    with running_head(net, HOSTS, ports=free_ports(), images=["smoke"], memory_gb=2) as h:
        yield h


#: Connects to each of PROBE_PORTS on PROBE_HOST and tries to read PROBE_FILE; prints what happened.
PROBE = (
    "import json, os, socket\n"
    "out = {}\n"
    "for port in os.environ['PROBE_PORTS'].split(','):\n"
    "    s = socket.socket(); s.settimeout(5)\n"
    "    try:\n"
    "        s.connect((os.environ['PROBE_HOST'], int(port))); out[port] = 'open'\n"
    "    except OSError as exc:\n"
    "        out[port] = type(exc).__name__\n"
    "    finally:\n"
    "        s.close()\n"
    "try:\n"
    "    open(os.environ['PROBE_FILE']).read(); out['file'] = 'read'\n"
    "except OSError as exc:\n"
    "    out['file'] = type(exc).__name__\n"
    "print('PROBE ' + json.dumps(out), flush=True)\n"
)
#: A port nothing guards, where the test listens on the host: the probe's proof that it reaches it.
CONTROL_PORT = 35555


def ray_listening_ports(host: Host) -> set[int]:
    """Every TCP port a Ray process (raylet, agents, workers: the node agent among them) listens on
    inside ``host``, from the kernel: each process's socket inodes matched with its namespace's
    listening sockets. Nothing here is taken from the runner's own idea of its ports."""
    ports: set[int] = set()
    for pid, cmd in host_processes(host).items():
        if not is_ray(cmd):
            continue
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # it ended meanwhile
            continue
        inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def probe_output(lines: list[str]) -> dict[str, str]:
    [found] = [line.split("PROBE ", 1)[1] for line in lines if line.startswith("PROBE ")]
    return json.loads(found)


@pytest.fixture
def listening_control(net: Network) -> Iterator[None]:
    """A plain server on host-a's own address at ``CONTROL_PORT``, for the length of a test."""
    host = net.hosts["host-a"]
    server = host.run(
        [
            sys.executable,
            "-c",
            "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            f"s.bind(('0.0.0.0', {CONTROL_PORT})); s.listen(64); time.sleep(600)",
        ]
    )
    try:
        yield
    finally:
        server.kill()
        server.wait()


def test_a_tenants_containers_cannot_reach_their_machines_ray_ports_or_its_token(
    head: Head, net: Network, listening_control: None
) -> None:
    """The attack: a tenant's job on host-a connects to every port a Ray process listens on there
    (the node agent's among them) and reads the node's token file, once from a bridged container
    (a batch job, through the runner) and once from a host-networked one (as a training gang's
    workers run, made by the runtime itself on host-a's engine). Every Ray port must refuse, the
    token must not be there, and the control port must answer (so a refusal is the guard's)."""
    from runner.core.guard import guarded_ports
    from runner.runtime import LaunchRequest
    from runner.runtime.docker import DockerRuntime

    host = net.hosts["host-a"]
    ray_ports = ray_listening_ports(host)
    assert ray_ports, "no Ray process listens on host-a"
    # The rules on host-a (its own kernel's) close every one of them; the control port stays open.
    rules = host.check(["iptables", "-S", "RUNNER-GUARD"])
    closed = {p for proto, lo, hi in guarded_ports(rules) if proto == "tcp" for p in range(lo, hi + 1)}
    assert ray_ports <= closed, sorted(ray_ports - closed)
    assert CONTROL_PORT not in closed
    env = {
        "PROBE_HOST": host.address,
        "PROBE_PORTS": ",".join(str(p) for p in sorted(ray_ports | {CONTROL_PORT})),
        "PROBE_FILE": str(host.home / "node-ray-token"),
    }
    assert (host.home / "node-ray-token").exists()  # the file is there, outside the container
    expected = {str(p): "ConnectionRefusedError" for p in ray_ports} | {str(CONTROL_PORT): "open"}

    started = time.time()
    job = head.tenant.submit(
        smoke(
            name="probe-bridged",
            command=["python", "-c", PROBE],
            env=env,
            placement={"regions": [HOSTS["host-a"][1]]},
            resources={"cpu": 0.5, "memory": "512MB"},
        )
    )
    done = wait_job(head, job["id"], lambda g: g["state"] in ("SUCCEEDED", "FAILED"), timeout_s=120, what="probe")
    assert done["state"] == "SUCCEEDED", done["message"]
    assert done["replicas"][0]["node"] == "host-a"
    bridged = probe_output([line["line"] for line in head.tenant.logs(job["id"])])
    assert bridged == {**expected, "file": "FileNotFoundError"}, bridged

    engine = host.docker()
    # The image the bridged job ran, as host-a's engine pulled it (from the head's registry); the
    # container itself is gone by now, its engine's events are not.
    [created] = [
        e for e in engine_events(host, started, label=f"runner.workload={job['id']}") if e["Action"] == "create"
    ]
    image = created["Actor"]["Attributes"]["image"]
    # A scope of its own: host-a's agent reconciles only its cluster's containers, and would
    # remove this one (which the store does not expect) as an orphan before the test reads it.
    runtime = DockerRuntime("host-a", artifacts_dir=host.root / "probe-artifacts", client=engine, scope="guard-probe")
    request = LaunchRequest(
        key="probe-hostnet-0-1",
        workload_id="probe-hostnet",
        replica_index=0,
        attempt=1,
        node="host-a",
        image=image,
        command=["python", "-c", PROBE],
        env=env,
        cpu=0.5,
        host_network=True,
    )
    runtime.start(request)
    try:
        # Until it ends, whichever way (the deadline is generous: a loaded 2-core host once took
        # over 60 s), then it must have ended by itself; the failure says what it saw.
        ended = wait_for(
            lambda: (st := runtime.status(request.key)).state.is_terminal() and st,
            timeout_s=180,
            what="the host-net probe",
        )
        assert ended.state.value == "EXITED", ended
        attrs = engine.containers.get("runner-" + request.key).attrs
        assert attrs["HostConfig"]["NetworkMode"] == "host" and attrs["Config"]["User"] == "1000:1000"
        lines = engine.containers.get("runner-" + request.key).logs().decode().splitlines()
        assert probe_output(lines) == {**expected, "file": "FileNotFoundError"}, lines
    finally:
        runtime.remove(request.key)


def test_the_metadata_range_is_closed_to_both_kinds_of_container_by_rule(head: Head, net: Network) -> None:
    """Inspected, never tried: no test sends anything to 169.254.0.0/16. A bridged container's
    packets leave through DOCKER-USER, a host-networked one's are its user's (uid 1000)."""
    for host in net.hosts.values():
        rules = host.check(["iptables", "-S"]).splitlines()
        metadata = [r for r in rules if "-d 169.254.0.0/16" in r and "-j REJECT" in r]
        assert any(r.startswith("-A OUTPUT") and "--uid-owner 1000" in r for r in metadata), rules
        for bridge in ("docker+", "br-+"):
            assert any(r.startswith("-A DOCKER-USER") and f"-i {bridge}" in r for r in metadata), rules
        # and Docker sends bridged traffic through DOCKER-USER before its own rules
        forward = [r for r in rules if r.startswith("-A FORWARD")]
        assert forward and forward[0] == "-A FORWARD -j DOCKER-USER", forward
