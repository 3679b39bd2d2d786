"""The supervisor's view of the Ray cluster: which provider nodes are alive, and their agents.

Agents are created (or found again, by name) for every live node that has keys; a node that goes
down loses its agent handle, and gets a fresh one when it comes back. A found agent is used only
once it has proven it is that node's (``AgentLink``: its first ``info`` signed by the key the node
made at join); an actor under a node's name that cannot, or that answers with anything but signed
bytes, is an impostor: reported (``on_impostor``: audited), killed, and never sent work. ``reconcile`` compares what each node
actually runs with what the store expects and removes orphans: a node that vanished and came
back may still run a replica that was given up on and started elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import ray

from runner import cluster
from runner.agent import get_or_create_agent
from runner.core.agent_wire import NodePublicKeys
from runner.node_keys import control_key
from runner.ray_nodes import RayNode
from runner.runtime import ReplicaStatus
from runner.settings import Settings
from runner.supervisor.agent_link import AgentLink, AgentUnreachable, NotTheNode

log = logging.getLogger("runner.cluster_view")

NODE_REFRESH_S = 1.0
RECONCILE_S = 30.0
SHUT_DOWN_RETRY_S = 10.0  # how often a node asked to leave the cluster is asked again while Ray still has it
AGENT_ERRORS = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, AgentUnreachable)
PROOF_TIMEOUT_S = 60.0  # an agent that has not answered its first info by then is asked afresh


def _no_keys(_name: str) -> NodePublicKeys | None:
    return None


def _ignore(_impostor: NotTheNode, _ray_node_id: str) -> None:
    pass


class ClusterView:
    def __init__(
        self,
        settings: Settings,
        keys_of: Callable[[str], NodePublicKeys | None] = _no_keys,
        on_impostor: Callable[[NotTheNode, str], None] = _ignore,
    ) -> None:
        self.settings = settings
        self.control = control_key(settings.control_key_path)
        #: The public keys a node registered at join (None: unknown node, or one without keys).
        self.keys_of = keys_of
        #: Told of an actor that answered for a node it is not, and the Ray node it ran on.
        self.on_impostor = on_impostor
        self.nodes: dict[str, RayNode] = {}
        #: Agents that proved they are their node's: the only ones sent commands.
        self.agents: dict[str, AgentLink] = {}
        #: Agents found or created, asked to prove it: their link, the ``info`` call, when asked.
        self._proving: dict[str, tuple[AgentLink, Any, float]] = {}
        self._refreshed_at = 0.0
        self._reconciles: dict[str, tuple[AgentLink, Any]] = {}
        self._reconciled_at: dict[str, float] = {}
        self._shut_down_at: dict[str, float] = {}
        #: Nodes on their way out of the cluster (``shut_down``): the step they are at, its calls.
        self._leaving: dict[str, tuple[str, list[Any]]] = {}

    def alive(self, name: str) -> bool:
        node = self.nodes.get(name)
        return node is not None and node.alive

    def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._refreshed_at < NODE_REFRESH_S:
            return
        self._refreshed_at = time.monotonic()
        self.nodes = {n.name: n for n in cluster.list_nodes()}
        self._take_proofs()
        for name, node in self.nodes.items():
            if node.alive and name not in self.agents and name not in self._proving:
                keys = self.keys_of(name)
                if keys is None:
                    continue  # not registered with keys: nothing to check its agent against
                try:
                    actor = get_or_create_agent(
                        name,
                        runtime=self.settings.node_runtime,
                        state_dir=self.settings.replicas_dir,
                        workdir=self.settings.workdir,
                        artifacts_dir=self.settings.artifacts_dir,
                        registry=self.settings.registry,
                    )
                    link = AgentLink(name, actor, keys, self.control)
                    self._proving[name] = (link, link.info(), time.monotonic())
                except Exception:  # one node's agent must not stop the others; retried next refresh
                    log.exception("cannot create the agent on %s", name)
            elif not node.alive:
                self.agents.pop(name, None)
                self._proving.pop(name, None)
                self._reconciled_at.pop(name, None)  # when it comes back, reconcile at once

    def _take_proofs(self) -> None:
        """Move each agent whose first ``info`` came back signed by its node into ``agents``."""
        for name, (link, ref, asked_at) in list(self._proving.items()):
            if not ray.wait([ref], timeout=0)[0]:
                if time.monotonic() - asked_at > PROOF_TIMEOUT_S:
                    link.forget(ref)
                    del self._proving[name]
                continue
            del self._proving[name]
            try:
                link.read(ref)
            except AgentUnreachable as exc:
                log.warning("agent on %s did not answer: %s", name, exc)
                continue
            except NotTheNode as impostor:
                self._refuse(link, impostor)
                continue
            self.agents[name] = link

    def _refuse(self, link: AgentLink, impostor: NotTheNode) -> None:
        """An actor answered for a node it is not: report it with the Ray node it runs on, kill
        it (the name is free again for the node's own agent), drop it."""
        log.error("%s", impostor)
        self.agents.pop(link.node, None)
        ray_node_id = ""
        try:
            actor_id = link.actor._actor_id.hex()
            ray_node_id = str((ray._private.state.actors(actor_id=actor_id) or {}).get("Address", {}).get("NodeID", ""))
        except Exception:
            log.exception("cannot tell where the impostor of %s runs", link.node)
        try:
            self.on_impostor(impostor, ray_node_id)
        finally:
            try:
                ray.kill(link.actor)
            except Exception:
                log.exception("cannot kill the impostor of %s", link.node)

    def read(self, link: AgentLink, ref: Any, timeout_s: float | None = None) -> Any:
        """``link.read``, with an impostor refused on the way (then raised as unreachable), and a
        dead agent's link dropped (a killed actor is not restarted: its name is taken afresh)."""
        try:
            return link.read(ref, timeout_s)
        except NotTheNode as impostor:
            self._refuse(link, impostor)
            raise AgentUnreachable(str(impostor)) from None
        except AgentUnreachable as exc:
            if exc.dead and self.agents.get(link.node) is link:
                del self.agents[link.node]  # found again (and proven again) at the next refresh
            raise

    def shut_down(self, name: str) -> None:
        """Take a live node that runs nothing (an offboarded one) out of the Ray cluster, over a
        few calls: its agent first removes the containers left on the machine (replicas that ended
        there, their logs stored), then Ray's GCS de-registers the node and shuts its raylet down
        gracefully, the agent and workers with it (``drain_nodes``, as Ray's autoscaler does)."""
        node, agent = self.nodes.get(name), self.agents.get(name)
        if node is None or not node.alive:
            self._leaving.pop(name, None)
            return
        step, refs = self._leaving.get(name, ("list", []))
        if refs and len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) < len(refs):
            return  # the agent is still at it
        if step == "list" and agent is not None and not refs:
            self._leaving[name] = ("list", [agent.list()])
            return
        if step == "list" and agent is not None:
            try:
                left: list[ReplicaStatus] = self.read(agent, refs[0])
            except AGENT_ERRORS:  # the agent could not say: nothing it could remove then
                left = []
            self._leaving[name] = ("drain", [agent.remove(status.key) for status in left])
            return
        now = time.monotonic()
        if now - self._shut_down_at.get(name, -SHUT_DOWN_RETRY_S) < SHUT_DOWN_RETRY_S:
            return
        self._shut_down_at[name] = now
        self._leaving[name] = ("drain", [])
        try:
            from ray._private.worker import global_worker

            drained = global_worker.gcs_client.drain_nodes([bytes.fromhex(node.node_id)], timeout=5)
        except Exception:  # asked again later; the node holds no work meanwhile
            log.exception("cannot take %s out of the cluster", name)
            return
        log.info("took %s out of the cluster (%s)", name, "shut down" if drained else "not drained: asked again")
        self.refresh(force=True)

    def pending_refs(self) -> list[Any]:
        return [ref for _node, ref in self._reconciles.values()] + [ref for _l, ref, _t in self._proving.values()]

    def reconcile(self, expected_keys: Callable[[], set[str]], busy_keys: set[str]) -> None:
        """Remove replicas a node runs that the store does not expect (``expected_keys``) and
        that no agent call is working on (``busy_keys``)."""
        for node, (link, ref) in list(self._reconciles.items()):
            if not ray.wait([ref], timeout=0)[0]:
                continue
            del self._reconciles[node]
            try:
                statuses: list[ReplicaStatus] = self.read(link, ref)
            except AGENT_ERRORS:
                continue
            expected = expected_keys()
            agent = self.agents.get(node)
            for status in statuses:
                if status.key not in expected and status.key not in busy_keys and agent is not None:
                    log.warning("removing orphan replica %s on %s (%s)", status.key, node, status.state)
                    agent.remove(status.key)
        now = time.monotonic()
        for node, agent in list(self.agents.items()):
            if node not in self._reconciles and now - self._reconciled_at.get(node, -RECONCILE_S) >= RECONCILE_S:
                self._reconciled_at[node] = now
                self._reconciles[node] = (agent, agent.list())
