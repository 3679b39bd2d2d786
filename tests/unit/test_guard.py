"""The machine's guard as rules (pure): every pinned Ray port is closed, nothing a workload needs is,
and the metadata range is closed to both kinds of container. The rules' effect on real traffic is
tested on the multi-host harness (``tests/multihost/test_machine_guard.py``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runner.core.guard import CHAIN, METADATA_CIDR, MULTIPORT_SLOTS, WORKLOAD_UID, guarded_ports, jumps, port_rules
from runner.core.node_ports import HEAD, NodePorts, merge_ranges
from runner.core.training import MASTER_PORT_BASE

EPHEMERAL_FROM = 32768  # Linux's default ip_local_port_range starts here


def listing_of(rules: list[list[str]]) -> str:
    """What ``iptables -S CHAIN`` prints for these rules (as the kernel keeps them)."""
    return "\n".join(" ".join(["-A", CHAIN, *rule]) for rule in rules)


def covered(listing: str, proto: str) -> set[int]:
    return {p for kind, lo, hi in guarded_ports(listing) if kind == proto for p in range(lo, hi + 1)}


@given(ray_port=st.integers(6000, 9800), index=st.integers(HEAD, 49))
def test_every_port_of_a_node_is_closed_for_tcp_and_udp(ray_port: int, index: int) -> None:
    ports = NodePorts.block(ray_port, index)
    wanted = {p for lo, hi in ports.ranges() for p in range(lo, hi + 1)}
    listing = listing_of(port_rules("n@1", ports.ranges()))
    assert covered(listing, "tcp") == covered(listing, "udp") == wanted
    for rule in port_rules("n@1", ports.ranges()):  # iptables refuses a multiport rule past 15 slots
        specs = rule[rule.index("--dports") + 1].split(",")
        assert sum(2 if ":" in spec else 1 for spec in specs) <= MULTIPORT_SLOTS


@given(ray_port=st.integers(6000, 9800))
def test_a_clusters_nodes_never_share_a_port_and_never_take_one_a_workload_needs(ray_port: int) -> None:
    blocks = [NodePorts.block(ray_port, i) for i in range(HEAD, 10)]
    seen: set[int] = set()
    for ports in blocks:
        mine = {p for lo, hi in ports.ranges() for p in range(lo, hi + 1)}
        assert not seen & mine
        seen |= mine
        assert ray_port not in mine  # the GCS's own port
        # Training rendezvous ports and the kernel's ephemeral ones (Docker's published ports, a
        # local S3 store) stay open to workloads.
        assert not mine & set(range(MASTER_PORT_BASE, EPHEMERAL_FROM)) and max(mine) < EPHEMERAL_FROM


def test_the_ray_flags_name_exactly_the_ports_the_guard_closes() -> None:
    ports = NodePorts.block(7440, HEAD)
    flags = dict(arg.split("=", 1) for arg in ports.ray_args())
    named = {int(v) for k, v in flags.items() if k.endswith("-port") and "worker" not in k}
    workers = set(range(int(flags["--min-worker-port"]), int(flags["--max-worker-port"]) + 1))
    assert named | workers == {p for lo, hi in ports.ranges() for p in range(lo, hi + 1)}


def test_both_kinds_of_container_are_sent_to_the_chain_and_kept_off_the_metadata_range() -> None:
    rules = jumps("DOCKER-USER")
    bridged = [rule for chain, rule in rules if chain == "INPUT"]
    assert {tuple(rule[:2]) for rule in bridged} == {("-i", "docker+"), ("-i", "br-+")}
    assert all(rule[-2:] == ["-j", CHAIN] for rule in bridged)
    host_net = [rule for chain, rule in rules if chain == "OUTPUT"]
    assert all(["--uid-owner", str(WORKLOAD_UID)] == rule[2:4] for rule in host_net)
    assert any("LOCAL" in rule and rule[-2:] == ["-j", CHAIN] for rule in host_net)  # this machine's ports
    assert any(METADATA_CIDR in rule and rule[-1] == "REJECT" for rule in host_net)
    forwarded = [rule for chain, rule in rules if chain == "DOCKER-USER"]
    assert len(forwarded) == 2 and all(METADATA_CIDR in rule and rule[-1] == "REJECT" for rule in forwarded)


def test_merging_ranges() -> None:
    assert merge_ranges([(5, 5), (1, 3), (4, 4), (10, 12), (11, 20)]) == [(1, 5), (10, 20)]
