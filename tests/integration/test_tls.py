"""Issue 14, point 6, on the CPU-mode cluster (the same mechanisms a network of hosts runs): a
process that holds the cluster's token but no certificate from the network's CA reaches no Ray
port, and the API answers only over TLS with the head's certificate. Each test is the attack,
with the network's own certificate as the control that shows the probe can get in."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from runner.client import Client
from runner.core.errors import UntrustedServerError
from runner.core.node_ports import HEAD, NodePorts
from runner.fleet import load_fleet
from runner.settings import Settings
from tests.support.tls_probe import LET_IN, foreign_certificate, knock, tls_context

pytestmark = pytest.mark.cluster


def listening_ports() -> set[int]:
    """Every TCP port something listens on here (the kernel's view)."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    return {int(m.group(1)) for m in re.finditer(r":(\d+)\s", out)}


def grpc_ports(settings: Settings) -> dict[int, str]:
    """This cluster's gRPC ports, each with what it is: the GCS, every node's raylet and object
    manager (the head's too), and every Ray worker listening in a node's worker range (the node
    agents among them)."""
    fleet = load_fleet(None)
    listening = listening_ports()
    found = {settings.ray_port: "the GCS"}
    for index, name in [(HEAD, "head"), *enumerate(n.name for n in fleet.nodes)]:
        block = NodePorts.block(settings.ray_port, index)
        found[block.node_manager] = f"{name}'s raylet"
        found[block.object_manager] = f"{name}'s object manager"
        for port in sorted(p for p in listening if block.min_worker <= p <= block.max_worker):
            found[port] = f"a Ray worker of {name}"
    return found


def test_no_ray_port_lets_in_a_process_without_the_networks_certificate(
    cluster_settings: Settings, tmp_path: Path
) -> None:
    """The attacker has the token (it is on every machine) and tries every gRPC port of the
    cluster three ways: plaintext (what a driver without Ray's TLS settings speaks), TLS without
    a certificate, and TLS with a certificate from a CA it made itself. None gets an answer; a
    node's own certificate does (the control)."""
    node = load_fleet(None).nodes[0].name
    node_tls = cluster_settings.home / "nodes" / node / "tls"
    ca = cluster_settings.home / "tls" / "ca.pem"
    foreign = foreign_certificate(tmp_path / "attacker")
    ports = grpc_ports(cluster_settings)
    assert sum("worker" in what for what in ports.values()) >= 4, f"no node agent found listening: {ports}"
    let_in = {}
    for port, what in ports.items():
        let_in[what, port] = {
            "plaintext": knock("127.0.0.1", port, None),
            "no certificate": knock("127.0.0.1", port, tls_context(ca)),
            "another CA's": knock("127.0.0.1", port, tls_context(ca, *foreign)),
            "a node's": knock("127.0.0.1", port, tls_context(ca, node_tls / "cert.pem", node_tls / "key.pem")),
        }
    broken = {k: v for k, v in let_in.items() if v["a node's"] != LET_IN}
    assert broken == {}, f"the control failed: a node's own certificate was not let in: {broken}"
    opened = {k: {how: r for how, r in v.items() if r == LET_IN and how != "a node's"} for k, v in let_in.items()}
    assert {k: v for k, v in opened.items() if v} == {}, "ports that let in a process without the network's certificate"


def test_the_api_answers_only_over_tls_with_the_heads_certificate(cluster_settings: Settings) -> None:
    """Plain HTTP gets no answer (nothing readable crosses the wire); a client that trusts only
    the public roots refuses the head's certificate (it is the network's CA's, not a public one);
    the network's CA verifies it."""
    plain = cluster_settings.server_url.replace("https://", "http://")
    assert plain.startswith("http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/v1/health", timeout=10)
    with pytest.raises(UntrustedServerError, match="not signed by this network's CA"):
        Client(cluster_settings.server_url, "rk_anything").health()
    answer = httpx.get(f"{cluster_settings.server_url}/v1/ca", verify=cluster_settings.server_verify, timeout=10)
    assert answer.status_code == 200 and answer.text == (cluster_settings.home / "tls" / "ca.pem").read_text()
