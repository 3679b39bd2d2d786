"""Placement: the market that decides where each replica runs. Pure and vectorized with numpy.

For one workload: **filter** every node through the rules in ``policy.Reason`` order (node up
and active, provider verified, geofences, export control, the spec's regions and countries, GPU
model, VRAM, price cap, reliability, latency to the player, then free GPUs, CPUs and memory),
**score** the nodes that pass (cheaper, more reliable, more verified TFLOPS per dollar, nearer
the preferred region: higher), and **choose** the best nodes with room, all replicas at once:
a gang is placed whole or not at all, on distinct nodes (and distinct providers when the spec
asks for spread) where the kind needs it.

Speed: the rules up to latency depend only on the workload's shape and its tenant, not on load.
``Placer`` computes that static part once per *equivalence class* (same shape, same tenant), as
one vector pass over the table, with the passing nodes sorted by score; each decision then walks
that order checking only free capacity. Since capacity only shrinks while a ``Placer`` places, a
node that is too full for a class stays too full, and the walk skips it for good. That is what
lets 10,000 pending workloads be placed over 100,000 nodes in well under a second.

``explain`` gives every node's verdict and score for ``runner explain``; ``first_rejection`` is
the same rules written as a plain loop over one node: the oracle the vector code is tested
against and the baseline ``bench/placement.py`` measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from runner.catalog import CATALOG
from runner.nodetable import Load, NodeRow, NodeTable, usd_to_micros
from runner.policy import NodeState, PolicyConfig, Reason, TenantFacts, restricted
from runner.regions import RegionTable, default_regions

EPS = 1e-9
#: Up to this many nodes, a refusal names every node and its reason; beyond, it counts.
SMALL_FLEET = 20
#: Beyond this RTT a node is as far as it gets for scoring (a player cannot tell 400 ms from 600).
FAR_MS = 300.0


@dataclass(frozen=True)
class Demand:
    """What a workload asks of the nodes its replicas run on, read off its spec."""

    gpu_models: tuple[str, ...] = ()
    gpus: int = 0
    min_vram_gb: int | None = None
    cpu: float = 1.0
    memory_mb: int = 0
    regions: tuple[str, ...] = ()
    deny_regions: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    deny_countries: tuple[str, ...] = ()
    max_price_micros: int | None = None  # per GPU-hour
    min_reliability: float | None = None
    near: str | None = None
    latency_budget_ms: float | None = None
    replicas: int = 1
    distinct_nodes: bool = False
    spread_providers: bool = False

    @classmethod
    def from_spec(cls, spec: Any, replicas: int | None = None) -> "Demand":
        """A spec's demand; ``replicas`` defaults to what one attempt of its kind runs."""
        res, pl, gpu = spec.resources, spec.placement, spec.resources.gpu
        kind = spec.kind
        count = replicas if replicas is not None else {
            "training": getattr(spec, "workers", 1), "batch": getattr(spec, "replicas", 1),
            "inference": getattr(getattr(spec, "replicas", None), "min", 1),
        }.get(kind, 1)  # fmt: skip
        return cls(
            gpu_models=tuple(gpu.models) if gpu else (), gpus=gpu.count if gpu else 0,
            min_vram_gb=gpu.min_vram_gb if gpu else None, cpu=res.cpu, memory_mb=res.memory or 0,
            regions=tuple(pl.regions), deny_regions=tuple(pl.deny_regions), countries=tuple(pl.countries),
            deny_countries=tuple(pl.deny_countries),
            max_price_micros=usd_to_micros(pl.max_price_per_gpu_hour) if pl.max_price_per_gpu_hour else None,
            min_reliability=pl.min_reliability, near=getattr(spec, "near", None),
            latency_budget_ms=getattr(spec, "latency_budget_ms", None) if getattr(spec, "near", None) else None,
            replicas=count, distinct_nodes=kind in ("training", "inference"), spread_providers=pl.spread_providers,
        )  # fmt: skip

    def static_key(self) -> tuple[Any, ...]:
        """The fields the static rules and the score read: one equivalence class per value."""
        return (self.gpu_models, self.gpus > 0, self.min_vram_gb, self.regions, self.deny_regions, self.countries,
                self.deny_countries, self.max_price_micros, self.min_reliability, self.near, self.latency_budget_ms)

    def one(self) -> "Demand":
        """The same demand for a single replica."""
        return replace(self, replicas=1)

    def region_mismatch(self, region: str) -> bool:
        """True when the spec lists allowed regions and ``region`` is not one of them."""
        return bool(self.regions) and region not in self.regions


@dataclass(frozen=True)
class Weights:
    """How the score trades price, reliability, performance per price and nearness (sum 1).

    ``near`` replaces ``region`` when the workload names a player's region: for a game session
    distance matters more than price.
    """

    price: float = 0.4
    reliability: float = 0.3
    perf_per_price: float = 0.2
    region: float = 0.1
    near: float = 0.6


@dataclass(frozen=True)
class Decision:
    """Where the replicas go (``nodes``, one per replica) or, when empty, why not."""

    nodes: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    #: How many nodes failed each rule (first failing rule per node), for the summary.
    counts: dict[Reason, int] = field(default_factory=dict)
    #: A few node names per failed rule, and each one's reason text.
    examples: dict[Reason, list[tuple[str, str]]] = field(default_factory=dict)
    total_nodes: int = 0
    message: str = ""

    @property
    def placed(self) -> bool:
        return bool(self.nodes)


@dataclass
class _Class:
    """The static part of placement for one equivalence class."""

    codes: np.ndarray  # Reason per node, 0 where every static rule passes
    scores: np.ndarray  # score per node (nan where a static rule fails)
    order: np.ndarray  # passing nodes, best score first
    cursor: int = 0  # order[:cursor] are too full for this class


@dataclass(frozen=True)
class ExplainRow:
    node: str
    provider: str
    region: str
    gpu: str
    price_usd: float
    verdict: str  # "ok" or the first reason it failed
    score: float | None
    chosen: bool = False


class Placer:
    """Places workloads on one snapshot of the fleet, keeping its load up to date as it commits."""

    def __init__(self, table: NodeTable, config: PolicyConfig, *, regions: RegionTable | None = None,
                 weights: Weights = Weights()) -> None:  # fmt: skip
        self.table = table
        self.config = config
        self.regions = regions or default_regions()
        self.weights = weights
        self._classes: dict[tuple[Any, ...], _Class] = {}
        # RTT from every known region to each node's region, filled per ``near`` on demand.
        self._rtt: dict[str, np.ndarray] = {}

    # -- static rules ----------------------------------------------------------------------------
    def _rtt_to(self, near: str) -> np.ndarray:
        if near not in self._rtt:
            per_region = np.array([self.regions.rtt_ms(near, r) for r in self.table.regions.names] or [math.inf])
            self._rtt[near] = per_region[self.table.region] if len(self.table) else np.zeros(0)
        return self._rtt[near]

    def static_codes(self, d: Demand, tenant: TenantFacts) -> np.ndarray:
        """Reason code per node from the rules that do not depend on load (0: passes all)."""
        t, cfg = self.table, self.config
        codes = np.zeros(len(t), dtype=np.int8)

        def fail(mask: np.ndarray | bool, reason: Reason) -> None:
            codes[(codes == 0) & mask] = reason

        fail(~t.alive, Reason.NODE_DOWN)
        fail(t.state != t.state_code(NodeState.ACTIVE), Reason.NODE_STATE)
        fail(~t.provider_ok, Reason.PROVIDER_KYC)
        fail(np.isin(t.country, t.countries.codes(cfg.network.deny_countries))
             | np.isin(t.region, t.regions.codes(cfg.network.deny_regions)), Reason.NETWORK_GEOFENCE)  # fmt: skip
        fence = cfg.tenant_geofence(tenant.id)
        fail(np.isin(t.country, t.countries.codes(fence.deny_countries))
             | np.isin(t.region, t.regions.codes(fence.deny_regions)), Reason.TENANT_GEOFENCE)  # fmt: skip
        if tenant.country in cfg.embargoed_countries:
            fail(t.restricted, Reason.EXPORT_CONTROL)
        else:
            fail(t.restricted & np.isin(t.country, t.countries.codes(cfg.embargoed_countries)), Reason.EXPORT_CONTROL)
        if d.regions:
            fail(~np.isin(t.region, t.regions.codes(d.regions)), Reason.REGION)
        if d.deny_regions:
            fail(np.isin(t.region, t.regions.codes(d.deny_regions)), Reason.REGION)
        if d.countries:
            fail(~np.isin(t.country, t.countries.codes(d.countries)), Reason.COUNTRY)
        if d.deny_countries:
            fail(np.isin(t.country, t.countries.codes(d.deny_countries)), Reason.COUNTRY)
        if d.gpus:
            fail(~np.isin(t.gpu, t.gpu_codes(d.gpu_models)), Reason.GPU_MODEL)
            if d.min_vram_gb:
                fail(t.vram_gb < d.min_vram_gb, Reason.VRAM)
            if d.max_price_micros is not None:
                fail(t.gpu_price > d.max_price_micros, Reason.PRICE)
        if d.min_reliability is not None:
            fail(t.reliability < d.min_reliability - EPS, Reason.RELIABILITY)
        if d.near and d.latency_budget_ms is not None:
            fail(self._rtt_to(d.near) > d.latency_budget_ms, Reason.LATENCY)
        return codes

    def score(self, d: Demand, ok: np.ndarray) -> np.ndarray:
        """Score of every node (nan where ``ok`` is False); higher is better, within [0, 1]."""
        t, w = self.table, self.weights
        scores = np.full(len(t), np.nan)
        if not ok.any():
            return scores
        price = (t.gpu_price if d.gpus else t.cpu_price)[ok].astype(np.float64)
        positive = np.maximum(price, 1.0)
        price_term = positive.min() / positive
        perf = t.tflops[ok] / positive
        perf_term = perf / perf.max() if perf.max() > 0 else np.zeros_like(perf)
        if d.near:
            region_weight = w.near
            region_term = 1.0 - np.minimum(self._rtt_to(d.near)[ok], FAR_MS) / FAR_MS
        else:
            region_weight = w.region
            first = t.regions.index.get(d.regions[0], -1) if d.regions else -1
            region_term = (t.region[ok] == first).astype(np.float64)
        rest = w.price + w.reliability + w.perf_per_price
        scale = (1.0 - region_weight) / rest if rest else 0.0
        scores[ok] = (scale * (w.price * price_term + w.reliability * t.reliability[ok] + w.perf_per_price * perf_term)
                      + region_weight * region_term)  # fmt: skip
        return scores

    def _class(self, d: Demand, tenant: TenantFacts) -> _Class:
        key = (d.static_key(), tenant.id, tenant.country)
        cls = self._classes.get(key)
        if cls is None:
            codes = self.static_codes(d, tenant)
            scores = self.score(d, codes == 0)
            passing = np.flatnonzero(codes == 0)
            order = passing[np.lexsort((passing, -scores[passing]))]
            cls = self._classes[key] = _Class(codes=codes, scores=scores, order=order)
        return cls

    # -- dynamic rules -----------------------------------------------------------------------------
    def _fits(self, i: int, d: Demand) -> bool:
        t = self.table
        if d.gpus and t.gpu_count[i] - t.used_gpus[i] < d.gpus:
            return False
        if t.cpus[i] - t.used_cpu[i] < d.cpu - EPS:
            return False
        return not (d.memory_mb and t.memory_mb[i] and t.memory_mb[i] - t.used_memory[i] < d.memory_mb)

    def capacity_codes(self, d: Demand) -> np.ndarray:
        """Reason per node from free GPUs, CPUs and memory alone (0: it has room)."""
        t = self.table
        codes = np.zeros(len(t), dtype=np.int8)
        if d.gpus:
            codes[t.gpu_count - t.used_gpus < d.gpus] = Reason.GPUS_FREE
        codes[(codes == 0) & (t.cpus - t.used_cpu < d.cpu - EPS)] = Reason.CPUS_FREE
        if d.memory_mb:
            short = (t.memory_mb > 0) & (t.memory_mb - t.used_memory < d.memory_mb)
            codes[(codes == 0) & short] = Reason.MEMORY_FREE
        return codes

    def _walk(self, cls: _Class, d: Demand, taken: list[int], providers: set[int] | None, *,
              may_skip: bool = True) -> int | None:  # fmt: skip
        """The best node of the class with room that is not taken (and whose provider is not).

        ``may_skip``: no tentative load is on the table, so a full node is full for good.
        """
        t, order = self.table, cls.order
        k = cls.cursor
        while k < len(order):
            i = int(order[k])
            if not self._fits(i, d):
                if k == cls.cursor and may_skip:  # capacity only shrinks: skip this node for good
                    cls.cursor += 1
                k += 1
                continue
            if (d.distinct_nodes and i in taken) or (providers is not None and int(t.provider[i]) in providers):
                k += 1
                continue
            return self._least_loaded_tie(cls, d, k, taken, providers)
        return None

    def _least_loaded_tie(self, cls: _Class, d: Demand, k: int, taken: list[int], providers: set[int] | None) -> int:
        """Among nodes of equal score from ``order[k]`` on, the least loaded one (spread ties)."""
        t, order = self.table, cls.order
        best = int(order[k])
        best_share = t.used_cpu[best] / t.cpus[best] if t.cpus[best] else 1.0
        for j in range(k + 1, min(k + 64, len(order))):
            i = int(order[j])
            if abs(cls.scores[i] - cls.scores[best]) > EPS:
                break
            if not self._fits(i, d) or (d.distinct_nodes and i in taken) or (
                    providers is not None and int(t.provider[i]) in providers):  # fmt: skip
                continue
            share = t.used_cpu[i] / t.cpus[i] if t.cpus[i] else 1.0
            if share < best_share - EPS:
                best, best_share = i, share
        return best

    # -- decisions ---------------------------------------------------------------------------------
    def decide(self, d: Demand, tenant: TenantFacts, *, commit: bool = True) -> Decision:
        """Nodes for all ``d.replicas`` replicas, or none with the reasons; commits the load."""
        cls = self._class(d, tenant)
        chosen = self._choose(cls, d, strict_providers=d.spread_providers)
        if chosen is None and d.spread_providers:
            chosen = self._choose(cls, d, strict_providers=False)
            if chosen is not None and d.replicas > 1 and len({int(self.table.provider[i]) for i in chosen}) < 2:
                chosen = None  # spread asks for at least two providers
        if chosen is None:
            return self._refusal(d, tenant, cls)
        names = tuple(self.table.names[i] for i in chosen)
        if commit:
            self.commit(names, d)
        return Decision(nodes=names, scores=tuple(float(cls.scores[i]) for i in chosen), total_nodes=len(self.table),
                        message=f"placed on {', '.join(names)}")  # fmt: skip

    def commit(self, nodes: tuple[str, ...], d: Demand) -> None:
        """Add the load of a decision made with ``commit=False`` (after explaining it, say)."""
        for name in nodes:
            self.table.add_load(self.table.position[name], d.cpu, d.gpus, d.memory_mb)

    def _choose(self, cls: _Class, d: Demand, *, strict_providers: bool) -> list[int] | None:
        """One node per replica, or None when the gang does not fit whole (load left unchanged)."""
        chosen: list[int] = []
        providers: set[int] | None = set() if strict_providers else None
        try:
            for _ in range(d.replicas):
                i = self._walk(cls, d, chosen, providers, may_skip=d.distinct_nodes or not chosen)
                if i is None:
                    return None
                chosen.append(i)
                if providers is not None:
                    providers.add(int(self.table.provider[i]))
                if not d.distinct_nodes:  # replicas may share a node: later ones must see this one's load
                    self.table.add_load(i, d.cpu, d.gpus, d.memory_mb)
            return chosen
        finally:
            if not d.distinct_nodes:  # the tentative load goes; ``decide`` commits for real
                for i in chosen:
                    self.table.remove_load(i, d.cpu, d.gpus, d.memory_mb)

    def full_codes(self, d: Demand, tenant: TenantFacts) -> np.ndarray:
        """Every rule, static then capacity, as one reason code per node."""
        codes = self._class(d, tenant).codes.copy()
        capacity = self.capacity_codes(d)
        codes[codes == 0] = capacity[codes == 0]
        return codes

    def _refusal(self, d: Demand, tenant: TenantFacts, cls: _Class) -> Decision:
        codes = self.full_codes(d, tenant)
        counts: dict[Reason, int] = {}
        examples: dict[Reason, list[tuple[str, str]]] = {}
        values, numbers = np.unique(codes, return_counts=True)
        for value, number in zip(values.tolist(), numbers.tolist()):
            reason = Reason(value)
            counts[reason] = number
            sample = np.flatnonzero(codes == value)[: SMALL_FLEET if len(self.table) <= SMALL_FLEET else 1]
            examples[reason] = [(self.table.names[i], self.reason_text(reason, int(i), d, tenant)) for i in sample]
        fitting = counts.get(Reason.OK, 0)
        if fitting:  # some nodes pass alone but not enough for the gang
            need = f"{d.replicas} distinct node(s)" + (" on distinct providers" if d.spread_providers else "")
            examples[Reason.OK] = [(name, f"only {fitting} node(s) fit, need {need}") for name, _ in examples[Reason.OK]]
        return Decision(counts=counts, examples=examples, total_nodes=len(self.table),
                        message=summarize(counts, examples, len(self.table)))  # fmt: skip

    # -- explain ------------------------------------------------------------------------------------
    def explain(self, d: Demand, tenant: TenantFacts, chosen: tuple[str, ...] = ()) -> list[ExplainRow]:
        """Every node with its verdict ("ok" or its first failed rule) and score, best first."""
        t = self.table
        codes = self.full_codes(d, tenant)
        scores = self._class(d, tenant).scores
        rows = []
        for i, name in enumerate(t.names):
            reason = Reason(int(codes[i]))
            row = t.rows[i]
            price = (row.gpu_price_micros if d.gpus else row.cpu_price_micros) / 1e6
            rows.append(ExplainRow(
                node=name, provider=row.provider, region=row.region, gpu=f"{row.gpu_count}x {row.gpu_model or 'cpu'}",
                price_usd=price, verdict="ok" if reason is Reason.OK else self.reason_text(reason, i, d, tenant),
                score=None if math.isnan(scores[i]) else round(float(scores[i]), 4), chosen=name in chosen,
            ))  # fmt: skip
        return sorted(rows, key=lambda r: (not r.chosen, r.score is None, -(r.score or 0.0), r.node))

    def reason_text(self, reason: Reason, i: int, d: Demand, tenant: TenantFacts) -> str:
        return reason_text(reason, self.table.rows[i], d, tenant, self.config, self.regions, self.table, i)


def reason_text(reason: Reason, row: NodeRow, d: Demand, tenant: TenantFacts, config: PolicyConfig,
                regions: RegionTable, table: NodeTable | None = None, i: int = 0) -> str:  # fmt: skip
    """The words for a node's first failed rule."""
    gpu = row.gpu_model or "none"
    free_gpus = row.gpu_count - (int(table.used_gpus[i]) if table is not None else 0)
    free_cpus = row.cpus - (float(table.used_cpu[i]) if table is not None else 0.0)
    free_mem = row.memory_mb - (int(table.used_memory[i]) if table is not None else 0)
    embargoed = tenant.country if tenant.country in config.embargoed_countries else row.country
    texts: dict[Reason, Callable[[], str]] = {
        Reason.NODE_DOWN: lambda: "node is down",
        Reason.NODE_STATE: lambda: f"node is {row.state.value}",
        Reason.PROVIDER_KYC: lambda: f"provider {row.provider} KYC is {row.provider_kyc.value}",
        Reason.NETWORK_GEOFENCE: lambda: f"network geofence denies {row.country}/{row.region}",
        Reason.TENANT_GEOFENCE: lambda: f"tenant geofence denies {row.country}/{row.region}",
        Reason.EXPORT_CONTROL: lambda: f"export control: {gpu} is restricted, {embargoed} is embargoed",
        Reason.REGION: lambda: f"region {row.region} "
                               + (f"not in {', '.join(d.regions)}" if d.region_mismatch(row.region) else "is denied"),
        Reason.COUNTRY: lambda: f"country {row.country} " + (
            f"not in {', '.join(d.countries)}" if d.countries and row.country not in d.countries else "is denied"),
        Reason.GPU_MODEL: lambda: f"gpu {gpu} not in {'|'.join(d.gpu_models)}",
        Reason.VRAM: lambda: f"vram {row.vram_gb}GB < {d.min_vram_gb}GB",
        Reason.PRICE: lambda: f"price {row.gpu_price_micros / 1e6:.2f}/GPU-h > cap {(d.max_price_micros or 0) / 1e6:.2f}",
        Reason.RELIABILITY: lambda: f"reliability {row.reliability:.3f} < {d.min_reliability}",
        Reason.LATENCY: lambda: f"rtt {regions.rtt_ms(d.near or '', row.region):g} ms from {d.near} > budget "
                                f"{d.latency_budget_ms or 0:g} ms",
        Reason.GPUS_FREE: lambda: f"{free_gpus} of {row.gpu_count} GPUs free, need {d.gpus}",
        Reason.CPUS_FREE: lambda: f"{free_cpus:g} of {row.cpus:g} CPUs free, need {d.cpu:g}",
        Reason.MEMORY_FREE: lambda: f"{free_mem} MB memory free, need {d.memory_mb} MB",
    }
    text = texts.get(reason)
    return text() if text else reason.name.lower()


def summarize(counts: dict[Reason, int], examples: dict[Reason, list[tuple[str, str]]], total: int) -> str:
    """One line for an event: why nothing fits. Small fleets: every node, grouped by its reason's
    words; large ones: how many nodes failed each rule, with one example each."""
    if total == 0:
        return "no provider nodes in the cluster"
    if total <= SMALL_FLEET:
        by_text: dict[str, list[str]] = {}
        for pairs in examples.values():
            for name, text in pairs:
                by_text.setdefault(text, []).append(name)
        parts = [f"{', '.join(sorted(names))}: {text}" for text, names in sorted(by_text.items(), key=lambda i: i[1])]
    else:
        parts = [f"{number} node(s) {reason.name.lower().replace('_', ' ')} (e.g. {examples[reason][0][0]}: "
                 f"{examples[reason][0][1]})" for reason, number in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]  # fmt: skip
    return "no node fits: " + "; ".join(parts)


# ----------------------------------------------------------------------------- the scalar oracle
def first_rejection(row: NodeRow, d: Demand, tenant: TenantFacts, config: PolicyConfig, load: Load,
                    regions: RegionTable) -> Reason:  # fmt: skip
    """The same rules as ``Placer.static_codes`` + ``capacity_codes``, for one node, in plain Python."""
    fence = config.tenant_geofence(tenant.id)
    checks = (
        (not row.alive, Reason.NODE_DOWN),
        (row.state is not NodeState.ACTIVE, Reason.NODE_STATE),
        (row.provider_kyc.value != "verified", Reason.PROVIDER_KYC),
        (bool(config.network.denies(row.country, row.region)), Reason.NETWORK_GEOFENCE),
        (bool(fence.denies(row.country, row.region)), Reason.TENANT_GEOFENCE),
        (restricted(row.gpu_model) and (tenant.country in config.embargoed_countries
                                        or row.country in config.embargoed_countries), Reason.EXPORT_CONTROL),
        ((bool(d.regions) and row.region not in d.regions) or row.region in d.deny_regions, Reason.REGION),
        ((bool(d.countries) and row.country not in d.countries) or row.country in d.deny_countries, Reason.COUNTRY),
        (d.gpus > 0 and row.gpu_model not in d.gpu_models, Reason.GPU_MODEL),
        (d.gpus > 0 and bool(d.min_vram_gb) and row.vram_gb < (d.min_vram_gb or 0), Reason.VRAM),
        (d.gpus > 0 and d.max_price_micros is not None and row.gpu_price_micros > d.max_price_micros, Reason.PRICE),
        (d.min_reliability is not None and row.reliability < d.min_reliability - EPS, Reason.RELIABILITY),
        (bool(d.near) and d.latency_budget_ms is not None
         and regions.rtt_ms(d.near or "", row.region) > d.latency_budget_ms, Reason.LATENCY),
        (d.gpus > 0 and (row.gpu_count if row.gpu_model else 0) - load.gpus < d.gpus, Reason.GPUS_FREE),
        (row.cpus - load.cpu < d.cpu - EPS, Reason.CPUS_FREE),
        (bool(d.memory_mb) and row.memory_mb > 0 and row.memory_mb - load.memory_mb < d.memory_mb, Reason.MEMORY_FREE),
    )  # fmt: skip
    return next((reason for failed, reason in checks if failed), Reason.OK)


def gpu_price_micros(gpu_model: str | None, label_price_usd: float | None = None) -> int:
    """A node's price per GPU-hour: its own stated price, else the catalog list price."""
    if label_price_usd is not None:
        return usd_to_micros(label_price_usd)
    return usd_to_micros(CATALOG[gpu_model].list_price_per_hour) if gpu_model else 0
