"""A provider that joined honestly, attacking from its own machine with what that machine was
given (issue 14, points 1 and 6): the cluster token and the certificate in its runner home, and
its engine's way to the head's registry. A
provider host of the harness (its own namespace and engine) runs the attacker's code; the
evidence is the head's own (its raylet's note of the workers it refused, the files on the head)
and the wire (what a port answers to a client in the host's namespace).

- Code it sends through Ray to the head (where the control plane's database, keys and CA key are)
  never runs there; the same code runs on its own node (the control).
- Without its certificate, the token alone opens no Ray port of the head; with it, they answer.
- An image it pushes to the head's registry over the operator's (the registry takes pushes from
  anyone who reaches it) is never what a node runs: nodes pull the network's images by the digest
  the operator's push pinned; the evidence is the host engine's own record of what it ran.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.network import Network
from harness.runner_net import Head, running_head
from runner.cluster import head_refusals_path
from tests.conftest import free_ports, wait_for
from tests.integration.test_image_cache_docker import tag_digest
from tests.integration.test_workloads import smoke
from tests.support.hosts import engine_events, wait_job

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(600)]

HOSTS = {"host-a": ("barn-a", "eu-west", "DE")}

#: The attacker's driver on its own machine: the token and the certificate its join left in its
#: runner home, the head's Ray address. Sends ``_steal`` to its own node (the control) and to the
#: head, and prints what came of each.
ATTACK = """
import json, os, sys, time
from pathlib import Path
home = Path(os.environ["RUNNER_HOME"])
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(home / "node-ray-token"), RAY_USE_TLS="1",
                  RAY_TLS_CA_CERT=str(home / "tls/ca.pem"), RAY_TLS_SERVER_CERT=str(home / "tls/cert.pem"),
                  RAY_TLS_SERVER_KEY=str(home / "tls/key.pem"))
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=os.environ["HEAD_RAY"], namespace="attacker", log_to_driver=False, logging_level="ERROR")

@ray.remote(num_cpus=0, max_retries=0)
def steal(database, marker):
    Path(marker).write_bytes(Path(database).read_bytes()[:64])
    return os.uname().nodename

out = {"own": ray.get(steal.options(label_selector={"node": os.environ["OWN_NODE"]}).remote(
    os.environ["DATABASE"], os.environ["OWN_MARKER"]), timeout=120)}
head = next(n for n in ray.nodes() if n["Alive"] and (n.get("Labels") or {}).get("role") == "head")
ref = steal.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head["NodeID"], soft=False)).remote(
    os.environ["DATABASE"], os.environ["HEAD_MARKER"])
print("SENT", flush=True)
deadline = time.monotonic() + float(os.environ["WAIT_S"])
done = []
while not done and time.monotonic() < deadline and not Path(os.environ["STOP"]).exists():
    done, _ = ray.wait([ref], timeout=1)
out["head_done"] = bool(done)
ray.cancel(ref, force=True)
print("ATTACK " + json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    with Network(Path(tempfile.mkdtemp(prefix="runner-mh-attack-")), list(HOSTS), registry_port=free_ports()[0]) as n:
        yield n


@pytest.fixture(scope="module")
def head(net: Network) -> Iterator[Head]:
    with running_head(net, HOSTS, ports=free_ports(), images=["smoke"], memory_gb=2) as h:
        yield h


def test_code_a_provider_sends_through_ray_to_the_head_never_runs_there(head: Head, net: Network) -> None:
    host = net.hosts["host-a"]
    work = Path(tempfile.mkdtemp(prefix="runner-attack-"))
    refusals = head_refusals_path(head.settings.logs_dir / "ray-head.log")
    before = refusals.read_text().count("\n") if refusals.exists() else 0
    log = work / "attack.log"
    env = {
        "HEAD_RAY": head.settings.ray_address,
        "OWN_NODE": "host-a",
        "DATABASE": str(head.settings.home / "runner.db"),  # the harness's hosts share this filesystem
        "OWN_MARKER": str(work / "ran-on-its-own-node"),
        "HEAD_MARKER": str(work / "ran-on-the-head"),
        "STOP": str(work / "stop"),
        "WAIT_S": "120",
    }
    attacker = host.run([sys.executable, "-c", ATTACK], log=log, **env)
    try:
        wait_for(
            lambda: "SENT" in log.read_text(), timeout_s=180, what=f"the attack to be sent: {log.read_text()[-2000:]}"
        )
        wait_for(
            lambda: (
                (work / "ran-on-the-head").exists() or (refusals.exists() and refusals.read_text().count("\n") > before)
            ),
            timeout_s=90,
            what="the head to refuse the worker for the attacker's task",
        )
        (work / "stop").touch()
        attacker.wait(timeout=120)
    finally:
        attacker.kill()
        attacker.wait()
    [line] = [x for x in log.read_text().splitlines() if x.startswith("ATTACK ")]
    result = json.loads(line.split(" ", 1)[1])
    assert (work / "ran-on-its-own-node").read_bytes().startswith(b"SQLite format 3"), "the control did not run"
    assert result["head_done"] is False and not (work / "ran-on-the-head").exists(), (
        "the attacker's task ran on the head"
    )


#: Knocks on each of PORTS at HEAD as a gRPC client, plaintext and with the machine's certificate.
KNOCK = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, os.environ["REPO"])
from tests.support.tls_probe import knock, tls_context
tls = Path(os.environ["RUNNER_HOME"]) / "tls"
own = tls_context(tls / "ca.pem", tls / "cert.pem", tls / "key.pem")
out = {p: {"plaintext": knock(os.environ["HEAD"], int(p), None), "certificate": knock(os.environ["HEAD"], int(p), own)}
       for p in os.environ["PORTS"].split(",")}
print("KNOCK " + json.dumps(out), flush=True)
"""


def test_from_a_providers_machine_the_token_alone_opens_no_ray_port_of_the_head(head: Head, net: Network) -> None:
    """The wire from the provider's namespace to the head: the GCS and the head's raylet and
    object manager answer a gRPC client only over TLS with a certificate of the network's CA."""
    from runner.core.node_ports import HEAD, NodePorts

    host = net.hosts["host-a"]
    block = NodePorts.block(head.settings.ray_port, HEAD)
    ports = [head.settings.ray_port, block.node_manager, block.object_manager]
    log = Path(tempfile.mkdtemp(prefix="runner-knock-")) / "knock.log"
    repo = str(Path(__file__).resolve().parents[2])
    proc = host.run(
        [sys.executable, "-c", KNOCK], log=log, HEAD=net.head_address, PORTS=",".join(map(str, ports)), REPO=repo
    )
    assert proc.wait(timeout=120) == 0, log.read_text()
    [line] = [x for x in log.read_text().splitlines() if x.startswith("KNOCK ")]
    answers = json.loads(line.split(" ", 1)[1])
    assert {p: a["certificate"] for p, a in answers.items()} == {str(p): "h2" for p in ports}, answers
    assert all(a["plaintext"] != "h2" for a in answers.values()), answers


def poison() -> bytes:
    """The attacker's image: a root filesystem of one file (were it run, the job would fail)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        marker = tarfile.TarInfo("POISONED")
        marker.size = 4
        tar.addfile(marker, io.BytesIO(b"evil"))
    return buf.getvalue()


def test_an_image_a_provider_pushes_over_the_operators_is_never_what_a_node_runs(head: Head, net: Network) -> None:
    assert net.registry
    host = net.hosts["host-a"]
    engine = host.docker()
    pins = {pin["reference"]: pin["digest"] for pin in head.operator.admin("GET", "/images")}
    operators = pins["runner/smoke:latest"]
    # The attack, from the provider's machine: its own image pushed as runner/smoke:latest.
    source = f"{net.registry}/runner/smoke"
    engine.api.import_image_from_data(poison(), repository=source, tag="latest")
    for event in engine.images.push(source, "latest", stream=True, decode=True):
        assert "error" not in event, event
    engine.api.remove_image(f"{source}:latest")
    registry_port = net.registry.rsplit(":", 1)[1]
    assert tag_digest(f"127.0.0.1:{registry_port}", "runner/smoke:latest") != operators  # the push took
    started = time.time()
    w = head.tenant.submit(smoke(name="after-the-poison"))
    done = wait_job(head, w["id"], lambda g: g["state"] in ("SUCCEEDED", "FAILED"), timeout_s=300, what="smoke")
    assert done["state"] == "SUCCEEDED", done["message"]
    # What host-a's engine made the container from: the operator's content, by digest.
    [created] = [e for e in engine_events(host, started, label=f"runner.workload={w['id']}") if e["Action"] == "create"]
    assert created["Actor"]["Attributes"]["image"] == f"{source}@{operators}", created
    assert f"{source}@{operators}" in engine.images.get(f"{source}@{operators}").attrs["RepoDigests"]
    lines = [item["line"] for item in head.tenant.logs(w["id"])]
    assert any('"smoke": "ok"' in line for line in lines), lines
