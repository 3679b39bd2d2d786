"""The placement rules, three ways: vectorized masks, one node in plain Python, and in words. Pure.

``static_masks`` yields, in ``policy.Reason`` order, a boolean mask per rule (True: the node
fails it) for the rules that do not depend on load, over the whole table or a subset of its rows.
From them, ``passing`` finds the nodes that fail none (the fast path placement takes for every
decision) and ``static_codes`` the first rule each node fails (for refusals and ``runner
explain``). ``first_rejection`` is the same rules for one node in plain Python: the oracle the
vector code is tested against and the baseline ``bench/placement.py`` measures. ``reason_text``
gives the words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from runner.core.demand import Demand
from runner.core.ledger import to_usd
from runner.core.nodetable import Load, NodeRow, NodeTable
from runner.core.policy import Geofence, NodeState, PolicyConfig, Reason, TenantFacts, restricted
from runner.core.regions import RegionTable

EPS = 1e-9


@dataclass(frozen=True)
class TenantRules:
    """The facts about a tenant the rules read: its geofence and whether it is embargoed.

    Tenants with equal facts are placed alike, so placement keys its cache on this, not on the
    tenant's name: 60 tenants without a geofence of their own share one class per workload shape.
    """

    fence: Geofence
    embargoed: bool

    @classmethod
    def of(cls, tenant: TenantFacts, config: PolicyConfig) -> "TenantRules":
        return cls(config.tenant_geofence(tenant.id), tenant.country in config.embargoed_countries)


class RuleContext:
    """What the vector rules need besides the table: the policy and the region distances."""

    def __init__(self, table: NodeTable, config: PolicyConfig, regions: RegionTable) -> None:
        self.table = table
        self.config = config
        self.regions = regions
        self._rtt: dict[str, np.ndarray] = {}
        self._rows: dict[tuple[str, ...], np.ndarray] = {}
        self._columns: dict[tuple[str, ...], dict[int, np.ndarray]] = {}
        t = table
        self.active = t.state_code(NodeState.ACTIVE)
        self.network_denied = t.countries.lut(config.network.deny_countries)
        self.network_denied_regions = t.regions.lut(config.network.deny_regions)
        self.embargoed_country = t.countries.lut(config.embargoed_countries)

    def rows_for(self, models: tuple[str, ...]) -> np.ndarray:
        """Indices of the nodes holding one of ``models``."""
        if models not in self._rows:
            parts = [self.table.by_gpu.get(int(c), np.empty(0, np.int64)) for c in self.table.gpu_codes(models)]
            self._rows[models] = np.concatenate(parts) if parts else np.empty(0, np.int64)
        return self._rows[models]

    def columns_for(self, models: tuple[str, ...]) -> dict[int, np.ndarray]:
        """The table's columns cut down to the nodes holding one of ``models``, cut once per set of
        models (a handful in any fleet) and keyed by the full column's ``id``."""
        if models not in self._columns:
            rows, t = self.rows_for(models), self.table
            cols = (
                t.alive,
                t.state,
                t.provider_ok,
                t.country,
                t.region,
                t.restricted,
                t.vram_gb,
                t.gpu_price,
                t.reliability,
            )
            self._columns[models] = {id(c): c[rows] for c in cols}
        return self._columns[models]

    def rtt_by_region(self, near: str) -> np.ndarray:
        """RTT from ``near`` to each region code of the table (index with ``table.region``)."""
        if near not in self._rtt:
            self._rtt[near] = np.array([self.regions.rtt_ms(near, r) for r in self.table.regions.names] or [math.inf])
        return self._rtt[near]


def static_masks(
    ctx: RuleContext, d: Demand, who: TenantRules, subset: tuple[str, ...] | None = None
) -> Iterator[tuple[Reason, np.ndarray]]:
    """(rule, fails) for every static rule that applies, in rule order, over the whole table, or
    over the nodes holding one of the GPU models ``subset`` (then the GPU-model rule holds)."""
    t = ctx.table
    columns = ctx.columns_for(subset) if subset is not None else None

    def col(values: np.ndarray) -> np.ndarray:
        return values if columns is None else columns[id(values)]

    country, region = col(t.country), col(t.region)
    yield Reason.NODE_DOWN, ~col(t.alive)
    yield Reason.NODE_STATE, col(t.state) != ctx.active
    yield Reason.PROVIDER_KYC, ~col(t.provider_ok)
    yield Reason.NETWORK_GEOFENCE, ctx.network_denied[country] | ctx.network_denied_regions[region]
    if who.fence.deny_countries or who.fence.deny_regions:
        yield (
            Reason.TENANT_GEOFENCE,
            (t.countries.lut(who.fence.deny_countries)[country] | t.regions.lut(who.fence.deny_regions)[region]),
        )
    held = col(t.restricted)
    yield Reason.EXPORT_CONTROL, held if who.embargoed else held & ctx.embargoed_country[country]
    if d.regions or d.deny_regions:
        fails = t.regions.lut(d.deny_regions)[region]
        yield Reason.REGION, (fails | ~t.regions.lut(d.regions)[region]) if d.regions else fails
    if d.countries or d.deny_countries:
        fails = t.countries.lut(d.deny_countries)[country]
        yield Reason.COUNTRY, (fails | ~t.countries.lut(d.countries)[country]) if d.countries else fails
    if d.gpus:
        if subset is None:
            yield Reason.GPU_MODEL, ~np.isin(t.gpu, t.gpu_codes(d.gpu_models))
        if d.min_vram_gb:
            yield Reason.VRAM, col(t.vram_gb) < d.min_vram_gb
        if d.max_price_micros is not None:
            yield Reason.PRICE, col(t.gpu_price) > d.max_price_micros
    if d.min_reliability is not None:
        yield Reason.RELIABILITY, col(t.reliability) < d.min_reliability - EPS
    if d.near and d.latency_budget_ms is not None:
        yield Reason.LATENCY, ctx.rtt_by_region(d.near)[region] > d.latency_budget_ms


def passing(ctx: RuleContext, d: Demand, who: TenantRules) -> np.ndarray:
    """Indices of the nodes that pass every static rule. A GPU workload only looks at the nodes
    holding one of its models, a small part of a large fleet."""
    subset = tuple(sorted(d.gpu_models)) if d.gpus else None
    rows = ctx.rows_for(subset) if subset is not None else None
    ok = np.ones(len(ctx.table) if rows is None else len(rows), dtype=bool)
    for _, fails in static_masks(ctx, d, who, subset):
        ok &= ~fails
    return (np.flatnonzero(ok) if rows is None else rows[ok]).astype(np.int64)


def static_codes(ctx: RuleContext, d: Demand, who: TenantRules) -> np.ndarray:
    """The first static rule each node fails (0: none). Rules are written last to first, so the
    earliest failing rule is the one that stays."""
    codes = np.zeros(len(ctx.table), dtype=np.int8)
    for reason, fails in reversed(list(static_masks(ctx, d, who))):
        codes[fails] = reason
    return codes


def capacity_codes(table: NodeTable, d: Demand, rows: np.ndarray | None = None) -> np.ndarray:
    """Reason per node (or per ``rows``) from free GPUs, CPUs and memory alone (0: it has room)."""
    t = table

    def col(values: np.ndarray) -> np.ndarray:
        return values if rows is None else values[rows]

    codes = np.zeros(len(t) if rows is None else len(rows), dtype=np.int8)
    if d.memory_mb:
        mem = col(t.memory_mb)
        codes[(mem > 0) & (mem - col(t.used_memory) < d.memory_mb)] = Reason.MEMORY_FREE
    codes[col(t.cpus) - col(t.used_cpu) < d.cpu - EPS] = Reason.CPUS_FREE
    if d.gpus:
        codes[col(t.gpu_count) - col(t.used_gpus) < d.gpus] = Reason.GPUS_FREE
    return codes


# ----------------------------------------------------------------------------- one node, plain Python
def first_rejection(
    row: NodeRow, d: Demand, tenant: TenantFacts, config: PolicyConfig, load: Load, regions: RegionTable
) -> Reason:
    """The same rules as ``static_codes`` + ``capacity_codes``, for one node, in plain Python."""
    fence = config.tenant_geofence(tenant.id)
    checks = (
        (not row.alive, Reason.NODE_DOWN),
        (row.state is not NodeState.ACTIVE, Reason.NODE_STATE),
        (row.provider_kyc.value != "verified", Reason.PROVIDER_KYC),
        (bool(config.network.denies(row.country, row.region)), Reason.NETWORK_GEOFENCE),
        (bool(fence.denies(row.country, row.region)), Reason.TENANT_GEOFENCE),
        (
            restricted(row.gpu_model)
            and (tenant.country in config.embargoed_countries or row.country in config.embargoed_countries),
            Reason.EXPORT_CONTROL,
        ),
        ((bool(d.regions) and row.region not in d.regions) or row.region in d.deny_regions, Reason.REGION),
        ((bool(d.countries) and row.country not in d.countries) or row.country in d.deny_countries, Reason.COUNTRY),
        (d.gpus > 0 and row.gpu_model not in d.gpu_models, Reason.GPU_MODEL),
        (d.gpus > 0 and bool(d.min_vram_gb) and row.vram_gb < (d.min_vram_gb or 0), Reason.VRAM),
        (d.gpus > 0 and d.max_price_micros is not None and row.gpu_price_micros > d.max_price_micros, Reason.PRICE),
        (d.min_reliability is not None and row.reliability < d.min_reliability - EPS, Reason.RELIABILITY),
        (
            bool(d.near)
            and d.latency_budget_ms is not None
            and regions.rtt_ms(d.near or "", row.region) > d.latency_budget_ms,
            Reason.LATENCY,
        ),
        (d.gpus > 0 and (row.gpu_count if row.gpu_model else 0) - load.gpus < d.gpus, Reason.GPUS_FREE),
        (row.cpus - load.cpu < d.cpu - EPS, Reason.CPUS_FREE),
        (bool(d.memory_mb) and row.memory_mb > 0 and row.memory_mb - load.memory_mb < d.memory_mb, Reason.MEMORY_FREE),
    )
    return next((reason for failed, reason in checks if failed), Reason.OK)


def reason_text(
    reason: Reason,
    row: NodeRow,
    d: Demand,
    tenant: TenantFacts,
    config: PolicyConfig,
    regions: RegionTable,
    load: Load = Load(),
) -> str:
    """The words for a node's first failed rule."""
    gpu = row.gpu_model or "none"
    embargoed = tenant.country if tenant.country in config.embargoed_countries else row.country
    texts: dict[Reason, Callable[[], str]] = {
        Reason.NODE_DOWN: lambda: "node is down",
        Reason.NODE_STATE: lambda: f"node is {row.state.value}",
        Reason.PROVIDER_KYC: lambda: f"provider {row.provider} KYC is {row.provider_kyc.value}",
        Reason.NETWORK_GEOFENCE: lambda: f"network geofence denies {row.country}/{row.region}",
        Reason.TENANT_GEOFENCE: lambda: f"tenant geofence denies {row.country}/{row.region}",
        Reason.EXPORT_CONTROL: lambda: f"export control: {gpu} is restricted, {embargoed} is embargoed",
        Reason.REGION: lambda: (
            f"region {row.region} "
            + (f"not in {', '.join(d.regions)}" if d.region_mismatch(row.region) else "is denied")
        ),
        Reason.COUNTRY: lambda: (
            f"country {row.country} "
            + (f"not in {', '.join(d.countries)}" if d.countries and row.country not in d.countries else "is denied")
        ),
        Reason.GPU_MODEL: lambda: f"gpu {gpu} not in {'|'.join(d.gpu_models)}",
        Reason.VRAM: lambda: f"vram {row.vram_gb}GB < {d.min_vram_gb}GB",
        Reason.PRICE: lambda: (
            f"price {to_usd(row.gpu_price_micros):.2f}/GPU-h > cap {to_usd(d.max_price_micros or 0):.2f}"
        ),
        Reason.RELIABILITY: lambda: f"reliability {row.reliability:.3f} < {d.min_reliability}",
        Reason.LATENCY: lambda: (
            f"rtt {regions.rtt_ms(d.near or '', row.region):g} ms from {d.near} > budget "
            f"{d.latency_budget_ms or 0:g} ms"
        ),
        Reason.GPUS_FREE: lambda: f"{row.gpu_count - load.gpus} of {row.gpu_count} GPUs free, need {d.gpus}",
        Reason.CPUS_FREE: lambda: f"{row.cpus - load.cpu:g} of {row.cpus:g} CPUs free, need {d.cpu:g}",
        Reason.MEMORY_FREE: lambda: f"{row.memory_mb - load.memory_mb} MB memory free, need {d.memory_mb} MB",
    }
    text = texts.get(reason)
    return text() if text else reason.name.lower()
