"""What a tenant's container may not reach on the machine it runs on, as firewall rules. Pure.

A provider's machine runs a Ray node, and the node agent is one of its workers: whoever reaches
those ports with the cluster's token commands the cluster. The token never enters a container,
but a container's code is the tenant's, and the tenant is not trusted: so no port of a Ray
process on the machine is reachable from a container at all, nor the link-local range where
clouds serve instance metadata (credentials of the machine's own cloud account, often).

Containers reach the machine two ways, and each is sent to one chain:

- a container on a Docker bridge: its packets arrive on the bridge (``INPUT``);
- a host-networked container (a training gang's workers): its packets are the machine's own,
  made by the workload's user, which the runtime fixes (``WORKLOAD_UID``) whatever the image says
  (``OUTPUT`` with an owner match, to the machine's own addresses, loopback included).

The chain rejects every guarded port (TCP and UDP); the rules of each Ray node on the machine
carry its name in a comment, so a node adds and removes its own. The metadata range is closed to
both kinds of container by two rules of their own (``DOCKER-USER`` for bridged packets leaving
the machine). Other machines' ports are not this machine's to close: Ray's token guards those.
"""

from __future__ import annotations

from collections.abc import Iterable

from runner.core.node_ports import merge_ranges

#: The chain every rule below lives in (jumped to from INPUT, OUTPUT and DOCKER-USER).
CHAIN = "RUNNER-GUARD"
#: The user every workload container runs as (the images' ``runner`` user): the owner match that
#: catches host-networked containers. The runtime sets it on every container.
WORKLOAD_UID = 1000
#: Where clouds serve instance metadata (169.254.169.254) and link-local services live.
METADATA_CIDR = "169.254.0.0/16"
#: The interfaces of Docker's bridges (the default ``docker0`` and user networks' ``br-*``).
BRIDGES = ("docker+", "br-+")
#: iptables' multiport takes at most 15 ports per rule, a range counting as two.
MULTIPORT_SLOTS = 15


def comment(owner: str) -> str:
    """The comment that marks the rules of one Ray node (or the machine's own: ``owner="*"``)."""
    return f"runner:{owner}"


def port_rules(owner: str, ranges: Iterable[tuple[int, int]]) -> list[list[str]]:
    """The chain's rules that close ``ranges`` (inclusive) for TCP and UDP, tagged with ``owner``."""
    specs = [f"{lo}" if lo == hi else f"{lo}:{hi}" for lo, hi in merge_ranges(list(ranges))]
    chunks: list[list[str]] = [[]]
    used = 0
    for spec in specs:
        cost = 2 if ":" in spec else 1
        if used + cost > MULTIPORT_SLOTS:
            chunks.append([])
            used = 0
        chunks[-1].append(spec)
        used += cost
    return [
        ["-p", proto, "-m", "multiport", "--dports", ",".join(chunk)]
        + ["-m", "comment", "--comment", comment(owner), "-j", "REJECT"]
        for proto in ("tcp", "udp")
        for chunk in chunks
        if chunk
    ]


def jumps(forward_chain: str = "DOCKER-USER") -> list[tuple[str, list[str]]]:
    """(built-in chain, rule) pairs, each tagged ``runner:*``: containers' packets to this
    machine go to ``CHAIN``; to the metadata range, from either kind of container, rejected."""
    tag = ["-m", "comment", "--comment", comment("*")]
    workload = ["-m", "owner", "--uid-owner", str(WORKLOAD_UID)]
    metadata = ["-d", METADATA_CIDR, *tag, "-j", "REJECT"]
    return [
        *(("INPUT", ["-i", bridge, *tag, "-j", CHAIN]) for bridge in BRIDGES),
        ("OUTPUT", [*workload, "-m", "addrtype", "--dst-type", "LOCAL", *tag, "-j", CHAIN]),
        ("OUTPUT", [*workload, *metadata]),
        *((forward_chain, ["-i", bridge, *metadata]) for bridge in BRIDGES),
    ]


def guarded_ports(listing: str) -> set[tuple[str, int, int]]:
    """(protocol, first, last) of every port range rejected in an ``iptables -S CHAIN`` listing:
    what the machine's rules say, read back for checks."""
    found = set()
    for line in listing.splitlines():
        words = line.split()
        if "REJECT" not in words or "--dports" not in words or "-p" not in words:
            continue
        proto = words[words.index("-p") + 1]
        for spec in words[words.index("--dports") + 1].split(","):
            lo, _, hi = spec.partition(":")
            found.add((proto, int(lo), int(hi or lo)))
    return found
