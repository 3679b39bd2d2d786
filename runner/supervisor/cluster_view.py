"""The supervisor's view of the Ray cluster: which provider nodes are alive, and their agents.

Agents are created (or found again, by name) for every live node; a node that goes down loses
its agent handle, and gets a fresh one when it comes back. ``reconcile`` compares what each node
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
from runner.ray_nodes import RayNode
from runner.runtime import ReplicaStatus
from runner.settings import Settings

log = logging.getLogger("runner.cluster_view")

NODE_REFRESH_S = 1.0
RECONCILE_S = 30.0
SHUT_DOWN_RETRY_S = 10.0  # how often a node asked to leave the cluster is asked again while Ray still has it
AGENT_ERRORS = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class ClusterView:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nodes: dict[str, RayNode] = {}
        self.agents: dict[str, Any] = {}
        self._refreshed_at = 0.0
        self._reconciles: dict[str, Any] = {}
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
        for name, node in self.nodes.items():
            if node.alive and name not in self.agents:
                try:
                    self.agents[name] = get_or_create_agent(
                        name,
                        runtime=self.settings.runtime,
                        state_dir=self.settings.replicas_dir,
                        workdir=self.settings.workdir,
                        artifacts_dir=self.settings.artifacts_dir,
                        registry=self.settings.registry,
                    )
                except Exception:  # one node's agent must not stop the others; retried next refresh
                    log.exception("cannot create the agent on %s", name)
            elif not node.alive:
                self.agents.pop(name, None)
                self._reconciled_at.pop(name, None)  # when it comes back, reconcile at once

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
            self._leaving[name] = ("list", [agent.list.remote()])
            return
        if step == "list" and agent is not None:
            try:
                left: list[ReplicaStatus] = ray.get(refs[0])
            except Exception:  # the agent could not say: nothing it could remove then
                left = []
            self._leaving[name] = ("drain", [agent.remove.remote(status.key) for status in left])
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
        return list(self._reconciles.values())

    def reconcile(self, expected_keys: Callable[[], set[str]], busy_keys: set[str]) -> None:
        """Remove replicas a node runs that the store does not expect (``expected_keys``) and
        that no agent call is working on (``busy_keys``)."""
        for node, ref in list(self._reconciles.items()):
            if not ray.wait([ref], timeout=0)[0]:
                continue
            del self._reconciles[node]
            try:
                statuses: list[ReplicaStatus] = ray.get(ref)
            except AGENT_ERRORS:
                continue
            expected = expected_keys()
            agent = self.agents.get(node)
            for status in statuses:
                if status.key not in expected and status.key not in busy_keys and agent is not None:
                    log.warning("removing orphan replica %s on %s (%s)", status.key, node, status.state)
                    agent.remove.remote(status.key)
        now = time.monotonic()
        for node, agent in self.agents.items():
            if node not in self._reconciles and now - self._reconciled_at.get(node, -RECONCILE_S) >= RECONCILE_S:
                self._reconciled_at[node] = now
                self._reconciles[node] = agent.list.remote()
