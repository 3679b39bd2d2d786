"""Placement at work in the control plane: the nodes as placement sees them, placing a pending
workload and recording why, and the node lifecycle steps that decide who is a candidate at all
(activating a node that joined, offboarding one that drained).

This is the I/O side of the pure core: it reads the registry and Ray's view of the nodes
(``ClusterView``), turns them into ``NodeRow``s, and lets ``placement.Placer`` decide; it writes
the decisions, with their candidate table for ``runner explain``, and their audit entries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict
from typing import Any

from runner.core import ledger
from runner.core.demand import Demand
from runner.core.network import NetworkConfig
from runner.core.nodetable import Load, NodeRow, NodeTable
from runner.core.placement import Decision, Placer
from runner.core.policy import KYC, NodeState, TenantFacts
from runner.core.regions import default_regions
from runner.core.sla import UptimeDay as UptimeFacts
from runner.core.sla import reliability, utc_day
from runner.store import Replica, Store, Workload
from runner.supervisor.cluster_view import ClusterView

RELIABILITY_S = 30.0  # how often reliability is recomputed from uptime
EXPLAIN_ROWS = 200  # candidate rows kept per placement record


class Placing:
    """Where work goes: rows, placers, decisions and their records, candidates coming and going."""

    def __init__(self, store: Store, config: NetworkConfig, cluster: ClusterView) -> None:
        self.store = store
        self.config = config
        self.cluster = cluster
        self.regions = default_regions()
        self._reliability: dict[str, float] = {}
        self._reliability_at = -RELIABILITY_S

    # -- the nodes as placement sees them ------------------------------------------------------------
    def rows(self) -> list[NodeRow]:
        """Every registered node that has not left, with Ray's liveness; nodes Ray has but the
        registry lacks (joined without ``runner node join``) are never candidates."""
        self._refresh_reliability()
        providers = {p.id: KYC(p.kyc) for p in self.store.list_providers()}
        rows = []
        for node in self.store.registry():
            if node.state == NodeState.OFFBOARDED.value:
                continue
            ray_node = self.cluster.nodes.get(node.name)
            rows.append(
                NodeRow(
                    name=node.name,
                    provider=node.provider_id,
                    region=node.region,
                    country=node.country,
                    gpu_model=node.gpu_model,
                    gpu_count=node.gpu_count,
                    vram_gb=node.vram_gb,
                    cpus=ray_node.cpus if ray_node else node.cpus,
                    memory_mb=ray_node.memory_mb if ray_node and ray_node.memory_mb else node.memory_mb,
                    alive=bool(ray_node and ray_node.alive and node.name in self.cluster.agents),
                    state=NodeState(node.state),
                    provider_kyc=providers.get(node.provider_id, KYC.PENDING),
                    gpu_price_micros=node.gpu_price_micros,
                    cpu_price_micros=node.cpu_price_micros,
                    reliability=self._reliability.get(node.name, self.config.sla.monthly_uptime),
                    tflops=node.verified_tflops,
                )
            )
        return rows

    def _refresh_reliability(self) -> None:
        if time.monotonic() - self._reliability_at < RELIABILITY_S:
            return
        self._reliability_at = time.monotonic()
        since = utc_day(time.time() - 30 * 86_400)
        days: dict[str, list[UptimeFacts]] = {}
        for d in self.store.uptime_days(since_day=since):
            days.setdefault(d.node, []).append(UptimeFacts(d.node, d.day, d.observed_s, d.online_s))
        self._reliability = {node: reliability(ds, self.config.sla) for node, ds in days.items()}

    @staticmethod
    def loads(active: Iterable[Replica], demand_of: Callable[[str], Demand]) -> dict[str, Load]:
        loads: dict[str, Load] = {}
        for rep in active:
            d = demand_of(rep.workload_id)
            loads[rep.node] = loads.get(rep.node, Load()).plus(d.cpu, d.gpus, d.memory_mb)
        return loads

    def tenant(self, tenant_id: str) -> TenantFacts:
        t = self.store.get_tenant(tenant_id)
        return TenantFacts(id=t.id, country=t.country, kyc=KYC(t.kyc))

    def placer(self, loads: dict[str, Load]) -> Placer:
        return Placer(NodeTable(self.rows(), loads), self.config.policy, regions=self.regions)

    def decide(self, placer: Placer, w: Workload, demand: Demand) -> Decision:
        """Place ``w`` (all its replicas or none) and record the decision when it is news."""
        tenant = self.tenant(w.tenant_id)
        decision = placer.decide(demand, tenant, commit=False)  # explained as it stood, then committed
        if decision.placed or decision.message != w.message:
            rows = [asdict(r) for r in placer.explain(demand, tenant, decision.nodes)[:EXPLAIN_ROWS]]
            with self.store.session() as s:
                self.store.append_audit(
                    s,
                    "placement",
                    {
                        "workload": w.id,
                        "tenant": w.tenant_id,
                        "attempt": w.attempts + 1,
                        "placed": decision.placed,
                        "nodes": list(decision.nodes),
                        "message": decision.message,
                        "counts": {r.name.lower(): n for r, n in decision.counts.items()},
                    },
                )
            self.store.record_placement(
                workload_id=w.id,
                attempt=w.attempts + 1,
                placed=decision.placed,
                nodes=list(decision.nodes),
                message=decision.message,
                rows=rows,
                total_nodes=decision.total_nodes,
            )
        if decision.placed:
            placer.commit(decision.nodes, demand)
        return decision

    def terms(self, placer: Placer, node: str, demand: Demand) -> dict[str, Any]:
        """What a replica on ``node`` costs: fixed at placement, billed per second while it runs."""
        row = placer.table.rows[placer.table.position[node]]
        if demand.gpus:
            return {
                "provider_id": row.provider,
                "price_micros": row.gpu_price_micros,
                "milli_units": ledger.units_milli(demand.gpus),
            }
        return {
            "provider_id": row.provider,
            "price_micros": row.cpu_price_micros,
            "milli_units": ledger.units_milli(demand.cpu),
        }

    # -- node lifecycle --------------------------------------------------------------------------------
    def activate_nodes(self) -> None:
        """Verified nodes become active once Ray has them and their agent exists."""
        for node in self.store.registry():
            if (
                node.state == NodeState.VERIFIED.value
                and node.name in self.cluster.agents
                and self.cluster.alive(node.name)
            ):
                self.store.move_node(node.name, NodeState.ACTIVE, "joined the cluster; agent up")

    def finish_drains(self, active: list[Replica], in_use: Collection[str] = ()) -> None:
        """A draining node whose work has all moved off is offboarded. An offboarded node that runs
        nothing, and whose agent the control plane needs no more (``in_use``: replicas that ended
        there whose last logs are still to be read), leaves the Ray cluster, its agent with it: it
        has no claim to work or to the cluster any more, and coming back takes a new join token."""
        busy = {r.node for r in active}
        for node in self.store.registry():
            if node.name in busy:
                continue
            state = node.state
            if state == NodeState.DRAINING.value:
                state = self.store.move_node(node.name, NodeState.OFFBOARDED, "drained: no work left").state
            if state == NodeState.OFFBOARDED.value and node.name not in in_use and self.cluster.alive(node.name):
                self.cluster.shut_down(node.name)
