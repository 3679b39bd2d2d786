"""Priorities and preemption: which running work makes room for a session. Pure.

A player is waiting while a session cannot start; a batch or training job loses only time when
it is stopped and placed again (a training job checkpoints on SIGTERM and resumes). So a session
outranks them: when no node has room for it, but one would if such a job's replicas left, that
job is stopped and placed again (a *relocation*, not a failure). Inference services are not
preempted: their users are waiting too.

Which job: among the jobs whose leaving makes room on a node the session may use (every rule
but capacity passes there), the **cheapest to move**: the least work thrown away, counted as
replica-seconds of the current attempt (a job that just started costs almost nothing to move;
a gang of 8 that has run for an hour costs the most). Ties go to the better-scored node, then to
the workload id, so the choice is deterministic.

Not at will: a hostile tenant could start sessions to stop a rival's jobs again and again. So a
workload stopped for a session is not stopped for one again for a while (``victim_cooldown_s``),
one tenant's sessions may stop only so many other tenants' workloads an hour
(``others_per_tenant_per_hour``; its own work it may stop as it likes), and the tenant pays the
victim back what the thrown-away attempt was billed (``ledger.preemption_refund``).

Capacity already on its way out (replicas of jobs being stopped for a drain, a budget, a cancel
or an earlier preemption) counts as free: if that is enough, the session waits for it instead
of stopping one more job. That is what keeps one waiting session from preempting a new job on
every tick while its first victim is still shutting down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from runner.core.demand import Demand
from runner.core.nodetable import Load, NodeTable
from runner.core.placement import EPS, Placer
from runner.core.policy import Reason, TenantFacts

#: Placement order of pending work: higher first (a session gets what was freed for it).
PRIORITY: dict[str, int] = {"gaming": 2, "inference": 1, "training": 0, "batch": 0}
#: Which kinds a pending workload of a kind may stop to make room.
PREEMPTS: dict[str, frozenset[str]] = {"gaming": frozenset({"batch", "training"})}
#: Refusal reasons that freed capacity can cure.
CAPACITY = frozenset({Reason.GPUS_FREE, Reason.CPUS_FREE, Reason.MEMORY_FREE})


def priority(kind: str) -> int:
    return PRIORITY.get(kind, 0)


@dataclass(frozen=True)
class PreemptionRules:
    """How often work may be stopped for sessions: the network rules' ``preemption`` section."""

    victim_cooldown_s: float
    others_per_tenant_per_hour: int


@dataclass(frozen=True)
class PastPreemption:
    """One earlier preemption, as its audit entry records it."""

    ts: float
    session_tenant: str
    victim: str
    victim_tenant: str


@dataclass(frozen=True)
class Allowance:
    """What a tenant's session may stop now: not the ``protected`` workloads, and other tenants'
    work only while ``others`` is true."""

    protected: frozenset[str]
    others: bool


HOUR_S = 3600.0


def allowance(past: Iterable[PastPreemption], now: float, tenant_id: str, rules: PreemptionRules) -> Allowance:
    """The rate rules over the preemptions so far (the audit log is their record)."""
    past = list(past)
    protected = frozenset(p.victim for p in past if now - p.ts < rules.victim_cooldown_s)
    stopped_others = sum(
        1 for p in past if p.session_tenant == tenant_id and p.victim_tenant != tenant_id and now - p.ts < HOUR_S
    )
    return Allowance(protected=protected, others=stopped_others < rules.others_per_tenant_per_hour)


@dataclass(frozen=True)
class Holder:
    """A workload holding capacity now: its load per node and what stopping it would cost."""

    workload_id: str
    kind: str
    loads: Mapping[str, Load]
    tenant_id: str = ""
    #: Replica-seconds of the current attempt that stopping it throws away (or redoes).
    lost_s: float = 0.0
    #: Already being stopped (drain, budget, cancel, an earlier preemption): its load is leaving.
    stopping: bool = False


@dataclass(frozen=True)
class Plan:
    """Where the session fits once ``victim`` leaves; ``victim`` None: once what is already
    leaving has left (wait, stop nothing)."""

    node: str
    victim: str | None = None
    lost_s: float = 0.0
    #: Every workload that would have made room, cheapest first: (id, node, lost_s).
    candidates: list[tuple[str, str, float]] = field(default_factory=list)


def _sum(loads: Iterable[Load]) -> Load:
    total = Load()
    for load in loads:
        total = Load(
            total.cpu + load.cpu,
            total.gpus + load.gpus,
            total.memory_mb + load.memory_mb,
            total.replicas + load.replicas,
        )
    return total


def fits_after(table: NodeTable, i: int, d: Demand, freed: Load) -> bool:
    """Would one replica of ``d`` fit on node ``i`` once ``freed`` has left it?"""
    if d.gpus and table.gpu_count[i] - table.used_gpus[i] + freed.gpus < d.gpus:
        return False
    if table.cpus[i] - table.used_cpu[i] + freed.cpu < d.cpu - EPS:
        return False
    memory = int(table.memory_mb[i])
    return not (d.memory_mb and memory and memory - table.used_memory[i] + freed.memory_mb < d.memory_mb)


def plan_preemption(
    placer: Placer,
    d: Demand,
    tenant: TenantFacts,
    kind: str,
    holders: Iterable[Holder],
    allowed: Allowance = Allowance(frozenset(), True),
) -> Plan | None:
    """How to make room for a workload ``placer`` just refused, or None when stopping lower-
    priority work cannot help (no victim kind, a gang, or no node passes the other rules) or
    ``allowed`` (the rate rules, ``allowance``) leaves no job that would."""
    victims_of = PREEMPTS.get(kind)
    if not victims_of or d.replicas != 1:
        return None
    table = placer.table
    ok = placer.static_codes(d, tenant) == 0
    eligible = np.flatnonzero(ok)
    if not len(eligible):
        return None
    score = dict(zip(eligible.tolist(), placer.score(d, eligible).tolist()))
    holders = list(holders)
    leaving: dict[str, Load] = {}
    for h in holders:
        if h.stopping:
            for node, load in h.loads.items():
                leaving[node] = _sum([leaving.get(node, Load()), load])
    for i in sorted(score, key=lambda i: (-score[i], i)):
        name = table.names[i]
        if name in leaving and fits_after(table, i, d, leaving[name]):
            return Plan(node=name)
    options: list[tuple[float, float, str, str]] = []
    for h in holders:
        if h.stopping or h.kind not in victims_of or h.workload_id in allowed.protected:
            continue
        if not allowed.others and h.tenant_id != tenant.id:
            continue
        for name, load in h.loads.items():
            i = table.position.get(name)
            if i is None or not ok[i]:
                continue
            if fits_after(table, i, d, _sum([leaving.get(name, Load()), load])):
                options.append((h.lost_s, -score[i], h.workload_id, name))
    if not options:
        return None
    options.sort()
    lost_s, _, victim, node = options[0]
    return Plan(node=node, victim=victim, lost_s=lost_s, candidates=[(v, n, cost) for cost, _, v, n in options])
