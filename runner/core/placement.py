"""Placement: the market that decides where each replica runs. Pure and vectorized with numpy.

For one workload: **filter** every node through the rules in ``policy.Reason`` order (node up
and active, provider verified, geofences, export control, the spec's regions and countries, GPU
model, VRAM, price cap, reliability, latency to the player, then free GPUs, CPUs and memory),
**score** the nodes that pass (cheaper, more reliable, more verified TFLOPS per dollar, nearer
the preferred region: higher), and **choose** the best nodes with room, all replicas at once:
a gang is placed whole or not at all, on distinct nodes (and distinct providers when the spec
asks for spread) where the kind needs it.

Speed: the rules up to latency depend only on the workload's shape and on two facts about its
tenant (its geofence, whether it is embargoed), not on load. ``Placer`` computes that static part
once per *equivalence class*, as one vector pass over the nodes holding the right GPU models,
with the passing nodes ranked by score lazily, best first; each decision then walks that order
checking only free capacity. Since capacity only shrinks while a ``Placer`` places, a node that
is too full for a replica of some size stays too full, and the walk skips it for good. That is
what lets 10,000 pending workloads be placed over 100,000 nodes in about a second
(``bench/placement.py``).

``explain`` gives every node's verdict and score for ``runner explain``. The rules themselves,
vectorized and as a plain-Python oracle, are in ``runner/core/rules.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runner.core.catalog import CATALOG
from runner.core.demand import Demand
from runner.core.ledger import to_micros, to_usd
from runner.core.nodetable import Load, NodeTable
from runner.core.policy import PolicyConfig, Reason, TenantFacts
from runner.core.regions import RegionTable, default_regions
from runner.core.rules import EPS, RuleContext, TenantRules, capacity_codes, passing, reason_text, static_codes

#: Up to this many nodes, a refusal names every node and its reason; beyond, it counts.
SMALL_FLEET = 20
#: Beyond this RTT a node is as far as it gets for scoring (a player cannot tell 400 ms from 600).
FAR_MS = 300.0


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


class _Ranking:
    """A class's passing nodes best-first (score down, then index), sorted lazily in chunks: a
    decision usually needs only the first few, and a full sort of 30,000 nodes per class would
    cost more than all the decisions together."""

    CHUNK = 256

    def __init__(self, nodes: np.ndarray, scores: np.ndarray) -> None:
        self._nodes, self._scores = nodes, scores
        self._rest = np.arange(len(nodes))
        self.order: list[int] = []  # node indices, best first
        self.order_scores: list[float] = []
        self.score_of: dict[int, float] = {}  # of the ranked nodes (every node a decision chooses is)

    def ensure(self, k: int) -> bool:
        """Rank until at least ``k`` nodes are ordered; False when there are fewer than ``k``."""
        while len(self.order) < k and len(self._rest):
            rest = self._rest
            neg = -self._scores[rest]
            if len(rest) > self.CHUNK:
                threshold = np.partition(neg, self.CHUNK - 1)[self.CHUNK - 1]
                take = neg <= threshold  # every node tied at the threshold comes along: order stays exact
                chunk, self._rest = rest[take], rest[~take]
            else:
                chunk, self._rest = rest, rest[:0]
            chunk = chunk[np.lexsort((self._nodes[chunk], -self._scores[chunk]))]
            nodes, scores = self._nodes[chunk].tolist(), self._scores[chunk].tolist()
            self.order.extend(nodes)
            self.order_scores.extend(scores)
            self.score_of.update(zip(nodes, scores))
        return len(self.order) >= k


@dataclass
class _Class:
    """The static part of placement for one equivalence class: who passes, their scores, order."""

    demand: Demand
    who: TenantRules
    nodes: np.ndarray  # passing node indices
    scores: np.ndarray  # their scores, aligned
    ranking: _Ranking
    #: Per replica size (cpu, gpus, memory): ranking.order[:cursor] are too full for it.
    cursors: dict[tuple[float, int, int], int] = field(default_factory=dict)
    codes: np.ndarray | None = None  # every node's first failed static rule, built when needed
    #: Static failures for refusals: reason -> (how many nodes, a few of them), built when needed.
    refused: dict[Reason, tuple[int, np.ndarray]] | None = None

    def all_scores(self, size: int) -> np.ndarray:
        """A score per node of the table (nan where a static rule fails), for ``explain``."""
        out = np.full(size, np.nan)
        out[self.nodes] = self.scores
        return out


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

    def __init__(
        self,
        table: NodeTable,
        config: PolicyConfig,
        *,
        regions: RegionTable | None = None,
        weights: Weights = Weights(),
    ) -> None:
        self.table = table
        self.config = config
        self.regions = regions or default_regions()
        self.weights = weights
        self.rules = RuleContext(table, config, self.regions)
        self._classes: dict[tuple[Any, ...], _Class] = {}

    # -- static rules ----------------------------------------------------------------------------
    def score(self, d: Demand, nodes: np.ndarray) -> np.ndarray:
        """Scores of ``nodes`` (which pass every static rule); higher is better, within [0, 1]."""
        t, w = self.table, self.weights
        if not len(nodes):
            return np.zeros(0)
        price = (t.gpu_price if d.gpus else t.cpu_price)[nodes].astype(np.float64)
        positive = np.maximum(price, 1.0)
        price_term = positive.min() / positive
        perf = t.tflops[nodes] / positive
        perf_term = perf / perf.max() if perf.max() > 0 else np.zeros_like(perf)
        if d.near:
            region_weight = w.near
            region_term = 1.0 - np.minimum(self.rules.rtt_by_region(d.near)[t.region[nodes]], FAR_MS) / FAR_MS
        else:
            region_weight = w.region
            first = t.regions.index.get(d.regions[0], -1) if d.regions else -1
            region_term = (t.region[nodes] == first).astype(np.float64)
        rest = w.price + w.reliability + w.perf_per_price
        scale = (1.0 - region_weight) / rest if rest else 0.0
        return (
            scale * (w.price * price_term + w.reliability * t.reliability[nodes] + w.perf_per_price * perf_term)
            + region_weight * region_term
        )

    def _class(self, d: Demand, tenant: TenantFacts) -> _Class:
        who = TenantRules.of(tenant, self.config)
        key = (d.static_key(), who)
        cls = self._classes.get(key)
        if cls is None:
            nodes = passing(self.rules, d, who)
            scores = self.score(d, nodes)
            cls = self._classes[key] = _Class(
                demand=d, who=who, nodes=nodes, scores=scores, ranking=_Ranking(nodes, scores)
            )
        return cls

    def static_codes(self, d: Demand, tenant: TenantFacts) -> np.ndarray:
        """Every node's first failed static rule (0: passes them all)."""
        cls = self._class(d, tenant)
        if cls.codes is None:
            cls.codes = static_codes(self.rules, d, cls.who)
        return cls.codes

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
        return capacity_codes(self.table, d)

    def _walk(
        self, cls: _Class, d: Demand, taken: list[int], providers: set[int] | None, *, may_skip: bool = True
    ) -> int | None:
        """The best node of the class with room that is not taken (and whose provider is not).

        ``may_skip``: no tentative load is on the table, so a full node is full for good.
        """
        t, ranking = self.table, cls.ranking
        size = (d.cpu, d.gpus, d.memory_mb)
        k = start = cls.cursors.get(size, 0)
        while ranking.ensure(k + 1):
            i = ranking.order[k]
            if not self._fits(i, d):
                if k == start and may_skip:  # capacity only shrinks: too full for this size for good
                    start = cls.cursors[size] = k + 1
                k += 1
                continue
            if (d.distinct_nodes and i in taken) or (providers is not None and int(t.provider[i]) in providers):
                k += 1
                continue
            return self._least_loaded_tie(cls, d, k, taken, providers)
        return None

    def _least_loaded_tie(self, cls: _Class, d: Demand, k: int, taken: list[int], providers: set[int] | None) -> int:
        """Among nodes of equal score from ``order[k]`` on, the least loaded one (spread ties)."""
        t, ranking = self.table, cls.ranking
        best, best_score = ranking.order[k], ranking.order_scores[k]
        best_share = t.used_cpu[best] / t.cpus[best] if t.cpus[best] else 1.0
        for j in range(k + 1, k + 64):
            if not ranking.ensure(j + 1) or abs(ranking.order_scores[j] - best_score) > EPS:
                break
            i = ranking.order[j]
            if (
                not self._fits(i, d)
                or (d.distinct_nodes and i in taken)
                or (providers is not None and int(t.provider[i]) in providers)
            ):
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
            chosen = self._two_providers(cls, d)
        if chosen is None:
            return self._refusal(d, tenant)
        names = tuple(self.table.names[i] for i in chosen)
        if commit:
            self.commit(names, d)
        return Decision(
            nodes=names,
            scores=tuple(cls.ranking.score_of[i] for i in chosen),
            total_nodes=len(self.table),
            message=f"placed on {', '.join(names)}",
        )

    def commit(self, nodes: tuple[str, ...], d: Demand) -> None:
        """Add the load of a decision made with ``commit=False`` (after explaining it, say)."""
        for name in nodes:
            self.table.add_load(self.table.position[name], d.cpu, d.gpus, d.memory_mb)

    def _two_providers(self, cls: _Class, d: Demand) -> list[int] | None:
        """Spread where a provider per replica is not to be had: at least two providers. The best
        choice ignoring providers, if it already has two; else the best node of any other provider
        than the one it used, then the best for the rest (which the first choice shows fit, since
        the node added is not among them). None when only one provider's nodes fit at all."""
        chosen = self._choose(cls, d, strict_providers=False)
        if chosen is None or d.replicas < 2 or len({int(self.table.provider[i]) for i in chosen}) >= 2:
            return chosen
        return self._choose(cls, d, strict_providers=False, first_not_of={int(self.table.provider[chosen[0]])})

    def _choose(
        self, cls: _Class, d: Demand, *, strict_providers: bool, first_not_of: set[int] | None = None
    ) -> list[int] | None:
        """One node per replica, or None when the gang does not fit whole (load left unchanged).
        ``first_not_of``: providers the first replica's node may not belong to."""
        chosen: list[int] = []
        providers: set[int] | None = set() if strict_providers else None
        try:
            for _ in range(d.replicas):
                avoid = first_not_of if first_not_of is not None and not chosen else providers
                i = self._walk(cls, d, chosen, avoid, may_skip=d.distinct_nodes or not chosen)
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
        codes = self.static_codes(d, tenant).copy()
        ok = np.flatnonzero(codes == 0)
        codes[ok] = capacity_codes(self.table, d, ok)
        return codes

    def _refusal(self, d: Demand, tenant: TenantFacts) -> Decision:
        """Why a workload fits nowhere: the static failures (counted once per class) and, on the
        nodes that pass them, the capacity failures (counted now), with a few nodes for each."""
        cls = self._class(d, tenant)
        take = SMALL_FLEET if len(self.table) <= SMALL_FLEET else 1
        if cls.refused is None:
            codes = self.static_codes(d, tenant)
            cls.refused = {
                Reason(v): (n, np.flatnonzero(codes == v)[:take])
                for v, n in enumerate(np.bincount(codes, minlength=len(Reason)).tolist())
                if n and v
            }
        found = dict(cls.refused)
        capacity = capacity_codes(self.table, d, cls.nodes)
        for v, n in enumerate(np.bincount(capacity, minlength=len(Reason)).tolist()):
            if n:
                found[Reason(v)] = (n, cls.nodes[np.flatnonzero(capacity == v)[:take]])
        counts = {reason: n for reason, (n, _) in found.items()}
        examples = {
            reason: [(self.table.names[i], self.reason_text(reason, int(i), d, tenant)) for i in sample]
            for reason, (_, sample) in found.items()
        }
        fitting = counts.get(Reason.OK, 0)
        if fitting:  # some nodes pass alone but not enough for all the replicas
            ok = cls.nodes[capacity == Reason.OK]
            if d.spread_providers and len({int(self.table.provider[i]) for i in ok}) == 1:
                why = f"the {fitting} node(s) that fit are all one provider's; spread_providers needs two"
            elif d.distinct_nodes:
                why = f"only {fitting} node(s) fit, need {d.replicas} distinct node(s)"
            else:
                why = f"the {fitting} node(s) that fit have room for fewer than {d.replicas} replica(s)"
            examples[Reason.OK] = [(name, why) for name, _ in examples[Reason.OK]]
        return Decision(
            counts=counts,
            examples=examples,
            total_nodes=len(self.table),
            message=summarize(counts, examples, len(self.table)),
        )

    # -- explain ------------------------------------------------------------------------------------
    def explain(self, d: Demand, tenant: TenantFacts, chosen: tuple[str, ...] = ()) -> list[ExplainRow]:
        """Every node with its verdict ("ok" or its first failed rule) and score, best first."""
        t = self.table
        codes = self.full_codes(d, tenant)
        scores = self._class(d, tenant).all_scores(len(t))
        rows = []
        for i, name in enumerate(t.names):
            reason = Reason(int(codes[i]))
            row = t.rows[i]
            price = to_usd(row.gpu_price_micros if d.gpus else row.cpu_price_micros)
            score = float(scores[i])
            rows.append(
                ExplainRow(
                    node=name,
                    provider=row.provider,
                    region=row.region,
                    gpu=f"{row.gpu_count}x {row.gpu_model or 'cpu'}",
                    price_usd=price,
                    verdict="ok" if reason is Reason.OK else self.reason_text(reason, i, d, tenant),
                    score=None if math.isnan(score) else round(score, 4),
                    chosen=name in chosen,
                )
            )
        return sorted(rows, key=lambda r: (not r.chosen, r.score is None, -(r.score or 0.0), r.node))

    def reason_text(self, reason: Reason, i: int, d: Demand, tenant: TenantFacts) -> str:
        t = self.table
        load = Load(cpu=float(t.used_cpu[i]), gpus=int(t.used_gpus[i]), memory_mb=int(t.used_memory[i]))
        return reason_text(reason, t.rows[i], d, tenant, self.config, self.regions, load)


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
        parts = [
            f"{number} node(s) {reason.name.lower().replace('_', ' ')} (e.g. {examples[reason][0][0]}: "
            f"{examples[reason][0][1]})"
            for reason, number in sorted(counts.items(), key=lambda i: (-i[1], i[0]))
        ]
    return "no node fits: " + "; ".join(parts)


def gpu_price_micros(gpu_model: str | None, label_price_usd: float | None = None) -> int:
    """A node's price per GPU-hour: its own stated price, else the catalog list price."""
    if label_price_usd is not None:
        return to_micros(label_price_usd)
    return to_micros(CATALOG[gpu_model].list_price_per_hour) if gpu_model else 0
