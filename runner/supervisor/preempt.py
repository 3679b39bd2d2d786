"""Preemption at work: when a session is refused for want of room, stop the cheapest batch or
training job whose leaving makes room (``runner.core.preemption`` decides; this module reads the
store and writes the decision).

The victim is not killed here: it gets a ``RELOCATE`` stop (``preempted by session ...``)
and its gang controller stops it gracefully (SIGTERM, a training job checkpoints) and places it
again, counted as a relocation, not a failure. The decision is written in one transaction
(``store.record_preemption``): the stop, an event on both workloads, an audit entry that names
the candidates it was chosen from, and the refund of the attempt's bill when the victim is another
tenant's. The rate rules (``core.preemption.allowance``) read the audit entries back. The session
stays pending and is placed (first, by priority) as soon as the victim's replicas are gone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from runner.core import ledger
from runner.core.budget import spent_by_replicas
from runner.core.demand import Demand
from runner.core.events import EventKind, Stop, StopReason, stopping
from runner.core.nodetable import Load
from runner.core.placement import Decision, Placer
from runner.core.preemption import CAPACITY, HOUR_S, PREEMPTS, Holder, PreemptionRules, allowance, plan_preemption
from runner.store import Workload
from runner.store.preemptions import Note
from runner.supervisor.ports import ControllerHost

log = logging.getLogger("runner.preempt")

PREEMPTED = "preempted by session "


class Preemptor:
    def __init__(self, supervisor: ControllerHost, rules: PreemptionRules) -> None:
        self.sup = supervisor
        self.store = supervisor.store
        self.rules = rules

    def make_room(self, placer: Placer, w: Workload, demand: Demand, decision: Decision) -> str | None:
        """Stop one job so that ``w`` fits, when that can help and the rate rules allow it; the
        victim's id, or None."""
        if w.kind not in PREEMPTS or not any(decision.counts.get(reason) for reason in CAPACITY):
            return None  # nothing of lower rank to stop, or what blocks it is not room
        now = time.time()
        holders = self.holders()
        tenant = self.sup.placing.tenant(w.tenant_id)
        since = now - max(self.rules.victim_cooldown_s, HOUR_S)
        allowed = allowance(self.store.past_preemptions(since), now, w.tenant_id, self.rules)
        plan = plan_preemption(placer, demand, tenant, w.kind, holders.values(), allowed)
        if plan is None or plan.victim is None:
            return None  # no victim would help (or the rules protect those that would), or room is being freed: wait
        victim = self.store.get_workload(plan.victim)
        attempt = [r for r in self.store.active_replicas() if r.workload_id == victim.id]
        billed = spent_by_replicas((r.price_micros or 0, r.milli_units or 0, r.metered_s or 0) for r in attempt)
        refs = {"victim": victim.id, "session": w.id, "attempt": victim.attempts}
        refund = ledger.preemption_refund(
            victim_tenant=victim.tenant_id,
            session_tenant=w.tenant_id,
            amount=billed,
            key=f"refund:preempt:{victim.id}:{victim.attempts}",
            refs=refs,
        )
        stop = Stop(StopReason.RELOCATE, f"{PREEMPTED}{w.id} on {plan.node}", {"preempted_by": w.id, "node": plan.node})
        refunded = billed if refund is not None else 0
        paid = f"; {ledger.usd(refunded)} USD refunded by {w.tenant_id}" if refunded else ""
        self.store.record_preemption(
            victim_id=victim.id,
            stop=stop,
            victim_note=Note(
                f"stopping: {stop.detail} (a session outranks {victim.kind} work; it will be placed again){paid}",
                EventKind.STOPPING,
                {"stop": stop.kind.value, "by": w.id},
            ),
            session_id=w.id,
            session_note=Note(
                f"preempting {victim.kind} {victim.id} on {plan.node} to make room "
                f"(cheapest to move of {len(plan.candidates)}: {plan.lost_s:.0f} replica-seconds of work)",
                EventKind.PREEMPTING,
                {"victim": victim.id, "node": plan.node},
            ),
            audit={
                "session": w.id,
                "tenant": w.tenant_id,
                "victim": victim.id,
                "victim_kind": victim.kind,
                "victim_tenant": victim.tenant_id,
                "node": plan.node,
                "lost_s": round(plan.lost_s, 1),
                "refund_micros": refunded,
                "candidates": [{"workload": v, "node": n, "lost_s": round(c, 1)} for v, n, c in plan.candidates],
            },
            refund=refund,
        )
        log.info("%s: preempting %s on %s", w.id, victim.id, plan.node)
        self.sup.wake()
        return victim.id

    def holders(self) -> dict[str, Holder]:
        """Every unfinished workload with replicas on nodes now: its load per node and its cost."""
        now = time.time()
        by_workload: dict[str, list[Any]] = {}
        for rep in self.store.active_replicas():
            by_workload.setdefault(rep.workload_id, []).append(rep)
        workloads = {w.id: w for w in self.store.active_workloads()}
        holders = {}
        for workload_id, reps in by_workload.items():
            w = workloads.get(workload_id)
            if w is None:  # it ended between the two reads
                continue
            d = self.sup.demand(workload_id)
            loads: dict[str, Load] = {}
            for rep in reps:
                loads[rep.node] = loads.get(rep.node, Load()).plus(d.cpu, d.gpus, d.memory_mb)
            lost = sum(now - rep.started_at for rep in reps if rep.started_at)
            holders[workload_id] = Holder(
                workload_id=w.id,
                kind=w.kind,
                loads=loads,
                tenant_id=w.tenant_id,
                lost_s=max(lost, 0.0),
                stopping=stopping(w),
            )
        return holders
