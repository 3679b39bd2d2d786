"""The machine's guard (``runner.core.guard``) put into the kernel with ``iptables``.

Installed where Ray nodes start: for its node by ``runner.join.start_ray_node`` (a provider's
``runner node join``, and each simulated node of CPU mode, which joins the same way), and for the
head's own ports by ``runner up``; each node's rules carry its owner (``NODE@HEAD_RAY_PORT``), so
two clusters on one machine and several nodes of one never remove each other's. Needs root (the
kernel's firewall is the machine's, not a user's): a machine that cannot install it does not join.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from runner.core.errors import ClusterError
from runner.core.guard import CHAIN, comment, jumps, port_rules

#: Docker's chain for rules of the machine's own on bridged traffic (made here if Docker has not
#: yet: Docker keeps it and jumps to it first once it runs).
FORWARD_CHAIN = "DOCKER-USER"


def owner(node: str, head_ray_port: int) -> str:
    """Whose rules these are: a node of the cluster whose head's Ray port is ``head_ray_port``."""
    return f"{node}@{head_ray_port}"


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("iptables")
    if binary is None and not check:  # reading or removing: without iptables nothing was installed
        return subprocess.CompletedProcess(["iptables", *args], 127, "", "iptables is not installed")
    if binary is None:
        raise ClusterError(
            "iptables is not installed: the machine's guard (what keeps tenants' containers off this "
            "machine's Ray ports) needs it. To fix: apt-get install iptables"
        )
    done = subprocess.run([binary, "-w", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise ClusterError(
            f"iptables {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}. The machine's "
            "guard needs root (run `runner node join` / `runner up` as root)"
        )
    return done


def _ensure_chains() -> None:
    """The guard's chain and the jumps to it, each once (a second install adds nothing)."""
    for chain in (CHAIN, FORWARD_CHAIN):
        if _iptables("-S", chain, check=False).returncode != 0:
            _iptables("-N", chain)
    for builtin, rule in reversed(jumps(FORWARD_CHAIN)):
        if _iptables("-C", builtin, *rule, check=False).returncode != 0:
            _iptables("-I", builtin, "1", *rule)


def install(who: str, ranges: Iterable[tuple[int, int]]) -> None:
    """Close ``ranges`` (inclusive ports) to containers, as ``who``'s rules (replacing any)."""
    _ensure_chains()
    remove(who)
    for rule in port_rules(who, ranges):
        _iptables("-A", CHAIN, *rule)


def _rules_of(test: str) -> list[list[str]]:
    """The chain's rules (as ``-A CHAIN ...`` words) whose comment satisfies ``test``."""
    listing = _iptables("-S", CHAIN, check=False)
    if listing.returncode != 0:
        return []
    rules = []
    for line in listing.stdout.splitlines():
        words = [word.strip('"') for word in line.split()]  # (the tags hold no spaces)
        if words[:2] == ["-A", CHAIN] and "--comment" in words:
            tag = words[words.index("--comment") + 1]
            if test(tag):
                rules.append(words)
    return rules


def remove(who: str) -> None:
    """Take ``who``'s rules out (the chain and other owners' rules stay)."""
    for words in _rules_of(lambda tag: tag == comment(who)):
        _iptables("-D", *words[1:], check=False)


def remove_cluster(head_ray_port: int) -> None:
    """Take out the rules of every node of one cluster (``runner down``); when no cluster's rules
    are left, the jumps and the chain go too."""
    for words in _rules_of(lambda tag: tag.endswith(f"@{head_ray_port}")):
        _iptables("-D", *words[1:], check=False)
    if _rules_of(lambda tag: True):
        return
    for builtin, rule in jumps(FORWARD_CHAIN):
        while _iptables("-D", builtin, *rule, check=False).returncode == 0:
            pass
    _iptables("-X", CHAIN, check=False)


def listing() -> str:
    """``iptables -S`` of the guard's chain ("" when there is none)."""
    done = _iptables("-S", CHAIN, check=False)
    return done.stdout if done.returncode == 0 else ""
