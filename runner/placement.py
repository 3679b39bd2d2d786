"""Placement: which node runs a replica. Pure: nodes and load in, a decision with reasons out.

This is the spine's placement: filter by the spec (GPU model, count, VRAM, regions, countries,
price cap, free CPU, GPUs and memory), then take the least-loaded node that passes. Every node
gets either "ok" or the first reason it failed, so `runner status` can say why a workload waits.
The provider-network work replaces the choice with a scored market; the filter stays.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from runner.catalog import get_gpu
from runner.nodes import NodeInfo


@dataclass(frozen=True)
class Demand:
    """What one replica needs, read off its spec."""

    gpu_models: tuple[str, ...] = ()
    gpus: int = 0
    min_vram_gb: int | None = None
    cpu: float = 1.0
    memory_mb: int = 0
    regions: tuple[str, ...] = ()
    deny_regions: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    deny_countries: tuple[str, ...] = ()
    max_price_per_gpu_hour: float | None = None

    @classmethod
    def from_spec(cls, spec: object) -> "Demand":
        res = spec.resources  # type: ignore[attr-defined]
        pl = spec.placement  # type: ignore[attr-defined]
        gpu = res.gpu
        return cls(
            gpu_models=tuple(gpu.models) if gpu else (),
            gpus=gpu.count if gpu else 0,
            min_vram_gb=gpu.min_vram_gb if gpu else None,
            cpu=res.cpu,
            memory_mb=res.memory or 0,
            regions=tuple(pl.regions),
            deny_regions=tuple(pl.deny_regions),
            countries=tuple(pl.countries),
            deny_countries=tuple(pl.deny_countries),
            max_price_per_gpu_hour=pl.max_price_per_gpu_hour,
        )


@dataclass(frozen=True)
class Load:
    """What is already placed on a node and not finished."""

    cpu: float = 0.0
    gpus: int = 0
    memory_mb: int = 0
    replicas: int = 0

    def plus(self, demand: Demand) -> "Load":
        return Load(self.cpu + demand.cpu, self.gpus + demand.gpus, self.memory_mb + demand.memory_mb, self.replicas + 1)


@dataclass(frozen=True)
class Decision:
    node: str | None
    reasons: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for an event: why nothing fits, grouped by reason."""
        if self.node:
            return f"placed on {self.node}"
        if not self.reasons:
            return "no provider nodes in the cluster"
        groups: dict[str, list[str]] = {}
        for node, reason in sorted(self.reasons.items()):
            groups.setdefault(reason, []).append(node)
        return "no node fits: " + "; ".join(f"{', '.join(nodes)}: {reason}" for reason, nodes in groups.items())


def node_price(node: NodeInfo) -> float | None:
    """Price per GPU-hour: the node's own label, else the catalog list price."""
    if "price" in node.labels:
        return float(node.labels["price"])
    return get_gpu(node.gpu_model).list_price_per_hour if node.gpu_model else None


def rejection(node: NodeInfo, demand: Demand, load: Load) -> str | None:
    """The first reason ``node`` cannot take ``demand`` now, or None when it can."""
    if not node.alive:
        return "node is down"
    if demand.regions and node.region not in demand.regions:
        return f"region {node.region} not in {', '.join(demand.regions)}"
    if node.region in demand.deny_regions:
        return f"region {node.region} is denied"
    if demand.countries and node.country not in demand.countries:
        return f"country {node.country} not in {', '.join(demand.countries)}"
    if node.country in demand.deny_countries:
        return f"country {node.country} is denied"
    if demand.gpus:
        if node.gpu_model not in demand.gpu_models:
            return f"gpu {node.gpu_model or 'none'} not in {'|'.join(demand.gpu_models)}"
        if demand.min_vram_gb and node.vram_gb < demand.min_vram_gb:
            return f"vram {node.vram_gb}GB < {demand.min_vram_gb}GB"
        price = node_price(node)
        if demand.max_price_per_gpu_hour is not None and price is not None and price > demand.max_price_per_gpu_hour:
            return f"price {price:.2f}/GPU-h > cap {demand.max_price_per_gpu_hour:.2f}"
        if node.gpu_count - load.gpus < demand.gpus:
            return f"{node.gpu_count - load.gpus} of {node.gpu_count} GPUs free, need {demand.gpus}"
    if node.cpus - load.cpu < demand.cpu - 1e-9:
        return f"{node.cpus - load.cpu:g} of {node.cpus:g} CPUs free, need {demand.cpu:g}"
    if demand.memory_mb and node.memory_mb and node.memory_mb - load.memory_mb < demand.memory_mb:
        return f"{node.memory_mb - load.memory_mb} MB memory free, need {demand.memory_mb} MB"
    return None


def place(demand: Demand, nodes: Iterable[NodeInfo], loads: dict[str, Load]) -> Decision:
    """Least-loaded node that passes every filter (ties broken by name, so it is deterministic)."""
    reasons: dict[str, str] = {}
    fitting: list[tuple[float, int, str]] = []
    for node in nodes:
        load = loads.get(node.name, Load())
        reason = rejection(node, demand, load)
        reasons[node.name] = reason or "ok"
        if reason is None:
            share = load.cpu / node.cpus if node.cpus else 1.0
            fitting.append((share, load.replicas, node.name))
    if not fitting:
        return Decision(node=None, reasons=reasons)
    return Decision(node=min(fitting)[2], reasons=reasons)
