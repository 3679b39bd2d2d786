"""Attacks by a provider that joined honestly and then uses the cluster token its machine was
given, as a Ray driver: on another provider's node agent, and on the control plane through it.

Each test performs the attack on a real CPU-mode cluster and fails if it works:
- commands it makes for the victim's agent (unsigned, or signed with a key of its own) are
  refused, and each refusal reaches the audit log;
- a real command it captured, replayed after the victim's agent restarted, is refused;
- it kills the victim's agent and registers an actor under its name, whose answer is a pickle
  that would run code in whoever unpickles it: the control plane never unpickles it, audits the
  impostor, suspends the attacker's provider, and the victim's own agent comes back.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from runner.core.agent_wire import ControlKey, Refused, make_command, open_reply
from runner.node_keys import node_keys
from runner.settings import Settings
from tests.conftest import extra_node, wait_for

VICTIM, ATTACKER = "vic-1", "atk-1"


def audit(operator: Any, kind: str) -> list[dict[str, Any]]:
    return list(operator.admin("GET", "/audit", params={"kind": kind, "limit": 10_000}))


def node_state(operator: Any, name: str) -> str:
    return str(next(n["state"] for n in operator.nodes() if n["name"] == name))


@pytest.fixture(scope="module")
def two_providers(cluster_settings: Settings, operator: Any) -> Any:
    """A victim's node and an attacker's, both joined through the real join path and active (once
    for the module: a node that left takes Ray seconds to be seen gone before its name is free)."""
    from runner import cluster

    with (
        extra_node(
            cluster_settings, operator, index=50, name=VICTIM, provider="victimco", region="eu-west", country="DE"
        ),
        extra_node(
            cluster_settings, operator, index=51, name=ATTACKER, provider="attackco", region="eu-west", country="DE"
        ),
    ):
        for name in (VICTIM, ATTACKER):
            wait_for(lambda name=name: node_state(operator, name) == "active", timeout_s=90, what=f"{name} active")
        cluster.connect(
            cluster_settings.ray_address, cluster_settings.ray_token_path, cluster_settings.tls_files
        )  # the attacker's driver
        yield
        for name in (VICTIM, ATTACKER):
            operator.admin("POST", f"/nodes/{name}/offboard")


def victim_agent() -> Any:
    import ray

    return ray.get_actor(f"agent-{VICTIM}", namespace="runner")


def test_commands_not_made_by_the_control_plane_are_refused_and_audited(
    cluster_settings: Settings, operator: Any, two_providers: Any
) -> None:
    import ray

    victim_keys = node_keys(cluster_settings.home / "nodes" / VICTIM / "keys.json").public()  # public halves
    forged, _nonce = make_command(ControlKey.generate(), VICTIM, victim_keys, "list", (), now=time.time())
    agent = victim_agent()
    for attempt in (b"give me your replicas", forged):
        answer = ray.get(agent.call.remote(attempt), timeout=60)
        with pytest.raises(Refused):  # a refusal, signed by the victim's own key
            open_reply(answer, node=VICTIM, nonce="", node_keys=victim_keys)

    def reasons() -> set[str]:
        return {e["payload"]["reason"] for e in audit(operator, "agent.refused") if e["payload"]["node"] == VICTIM}

    wanted = {"not signed by the control plane", "not a command"}
    wait_for(
        lambda: wanted <= reasons(), timeout_s=60, what="both refusals audited (the checker's heartbeat reads them)"
    )
    assert len(audit(operator, "agent.refused")) == 2  # each once
    assert node_state(operator, VICTIM) == "active"  # the victim did nothing wrong


def test_a_command_replayed_after_its_agent_restarts_is_refused(
    cluster_settings: Settings, operator: Any, two_providers: Any
) -> None:
    """The attacker captured one real command for the victim (say, a stop it saw go by), waits
    for the victim's agent to restart (Ray restarts it; here the attacker kills it) and sends the
    same bytes again, inside their lifetime: the restarted agent kept the nonce, and refuses."""
    import ray

    from runner.node_keys import control_key

    victim_keys = node_keys(cluster_settings.home / "nodes" / VICTIM / "keys.json").public()
    control = control_key(cluster_settings.control_key_path)  # the test plays the control plane once
    captured, nonce = make_command(control, VICTIM, victim_keys, "list", (), now=time.time())

    def agent_started_at() -> float | None:
        """When the victim's agent process started, asked with a command of the control plane's."""
        ask, asked = make_command(control, VICTIM, victim_keys, "info", (), now=time.time())
        try:
            answer = ray.get(victim_agent().call.remote(ask), timeout=10)
            return float(open_reply(answer, node=VICTIM, nonce=asked, node_keys=victim_keys)["started_at"])
        except Exception:  # restarting
            return None

    first = ray.get(victim_agent().call.remote(captured), timeout=60)
    assert isinstance(open_reply(first, node=VICTIM, nonce=nonce, node_keys=victim_keys), list)  # acted on once
    before = agent_started_at()
    assert before is not None
    ray.kill(victim_agent(), no_restart=False)
    wait_for(lambda: (at := agent_started_at()) is not None and at != before, timeout_s=90, what="the agent restarted")

    answer = ray.get(victim_agent().call.remote(captured), timeout=60)
    with pytest.raises(Refused, match="replayed"):
        open_reply(answer, node=VICTIM, nonce="", node_keys=victim_keys)


def test_an_actor_claiming_another_nodes_agent_is_refused_and_its_provider_suspended(
    cluster_settings: Settings, operator: Any, two_providers: Any, tmp_path: Path
) -> None:
    import ray

    marker = tmp_path / "the-control-plane-ran-my-code"

    class Payload:
        """Unpickled, it writes ``marker`` with the command line of the process that did: proof
        that its reader ran the attacker's code (seen: ``runner.cli server``, through a future)."""

        def __init__(self, path: str) -> None:
            self.path = path

        def __reduce__(self) -> Any:
            return (os.system, (f"cat /proc/$PPID/cmdline > {self.path}",))

    class Impostor:
        def __init__(self, path: str) -> None:
            self.path = path

        def call(self, _command: bytes) -> Any:
            return Payload(self.path)

    ray.kill(victim_agent())
    ray.remote(Impostor).options(
        name=f"agent-{VICTIM}",
        namespace="runner",
        lifetime="detached",
        num_cpus=0,
        label_selector={"node": ATTACKER},  # on the attacker's own machine
    ).remote(str(marker))
    impostors = wait_for(
        lambda: [e for e in audit(operator, "node.impostor") if e["payload"]["node"] == VICTIM] or None,
        timeout_s=90,
        what="the impostor to be refused",
    )
    assert impostors[-1]["payload"]["provider"] == "attackco"
    assert not marker.exists(), f"the impostor's answer ran in: {marker.read_bytes()!r}"
    wait_for(lambda: node_state(operator, ATTACKER) == "suspended", timeout_s=30, what="the attacker suspended")
    assert node_state(operator, VICTIM) == "active"
    # The victim's own agent is back under its name, and answers as the victim.
    from runner.node_keys import control_key
    from runner.supervisor.agent_link import AgentLink

    keys = node_keys(cluster_settings.home / "nodes" / VICTIM / "keys.json").public()
    link = AgentLink(VICTIM, None, keys, control_key(cluster_settings.control_key_path))

    def answers_as_victim() -> bool:
        try:
            link.actor = victim_agent()
            return bool(link.read(link.info(), timeout_s=10)["node"] == VICTIM)
        except Exception:
            return False

    wait_for(answers_as_victim, timeout_s=90, what="the victim's own agent to be back")
    assert not marker.exists()


def _steal(database: str, marker: str) -> str:
    """The attacker's task: copy the start of the control plane's database where it can read it."""
    Path(marker).write_bytes(Path(database).read_bytes()[:64])
    return "stolen"


def test_code_sent_through_ray_to_the_head_never_runs_there(
    cluster_settings: Settings, two_providers: Any, tmp_path: Path
) -> None:
    """Issue 14, point 1: the attacker's driver sends a zero-CPU task (it fits a node with no
    CPUs) pinned to the head, where the control plane's database, keys and CA key are. The head's
    raylet refuses the worker that would run it (the head's note of it is the evidence the task
    got there), and nothing of the task runs. The same task on the attacker's own node runs: the
    control, showing that the task itself works."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from runner.cluster import head_refusals_path

    steal = ray.remote(num_cpus=0, max_retries=0)(_steal)
    database = str(cluster_settings.home / "runner.db")
    own = tmp_path / "ran-on-the-attackers-node"
    assert ray.get(steal.options(label_selector={"node": ATTACKER}).remote(database, str(own)), timeout=120) == "stolen"
    assert own.read_bytes().startswith(b"SQLite format 3")

    head = next(n for n in ray.nodes() if n["Alive"] and (n.get("Labels") or {}).get("role") == "head")
    refusals = head_refusals_path(cluster_settings.logs_dir / "ray-head.log")
    before = refusals.read_text().count("\n") if refusals.exists() else 0
    marker = tmp_path / "ran-on-the-head"
    ref = steal.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head["NodeID"], soft=False)).remote(
        database, str(marker)
    )
    try:
        wait_for(
            lambda: marker.exists() or (refusals.exists() and refusals.read_text().count("\n") > before),
            timeout_s=60,
            what="the head to refuse the worker for the attacker's task",
        )
        done, _ = ray.wait([ref], timeout=0)  # reads no result
        assert done == [] and not marker.exists(), "the attacker's task ran on the head"
    finally:
        ray.cancel(ref, force=True)
