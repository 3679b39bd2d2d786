"""Preemption at work: when a session is refused for want of room, stop the cheapest batch or
training job whose leaving makes room (``runner.core.preemption`` decides; this module reads the
store and writes the decision).

The victim is not killed here: it gets a ``RELOCATE`` stop (``preempted by session ...``)
and its gang controller stops it gracefully (SIGTERM, a training job checkpoints) and places it
again, counted as a relocation, not a failure. The decision is written as events on both
workloads and as an audit entry that names the candidates it was chosen from. The session
stays pending and is placed (first, by priority) as soon as the victim's replicas are gone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from runner.core.demand import Demand
from runner.core.events import EventKind, Stop, StopReason, stopping
from runner.core.nodetable import Load
from runner.core.placement import Decision, Placer
from runner.core.preemption import CAPACITY, PREEMPTS, Holder, plan_preemption
from runner.store import Workload
from runner.supervisor.ports import ControllerHost

log = logging.getLogger("runner.preempt")

PREEMPTED = "preempted by session "


class Preemptor:
    def __init__(self, supervisor: ControllerHost) -> None:
        self.sup = supervisor
        self.store = supervisor.store

    def make_room(self, placer: Placer, w: Workload, demand: Demand, decision: Decision) -> str | None:
        """Stop one job so that ``w`` fits, when that can help; the victim's id, or None."""
        if w.kind not in PREEMPTS or not any(decision.counts.get(reason) for reason in CAPACITY):
            return None  # nothing of lower rank to stop, or what blocks it is not room
        holders = self.holders()
        tenant = self.sup.placing.tenant(w.tenant_id)
        plan = plan_preemption(placer, demand, tenant, w.kind, holders.values())
        if plan is None or plan.victim is None:
            return None  # no victim would help, or room is already being freed: wait
        victim = self.store.get_workload(plan.victim)
        stop = Stop(StopReason.RELOCATE, f"{PREEMPTED}{w.id} on {plan.node}", {"preempted_by": w.id, "node": plan.node})
        self.store.update_workload(victim.id, **stop.fields())
        self.store.add_event(
            victim.id,
            victim.state,
            f"stopping: {stop.detail} (a session outranks {victim.kind} work; it will be placed again)",
            kind=EventKind.STOPPING,
            data={"stop": stop.kind.value, "by": w.id},
        )
        self.store.add_event(
            w.id,
            w.state,
            f"preempting {victim.kind} {victim.id} on {plan.node} to make room "
            f"(cheapest to move of {len(plan.candidates)}: {plan.lost_s:.0f} "
            "replica-seconds of work)",
            kind=EventKind.PREEMPTING,
            data={"victim": victim.id, "node": plan.node},
        )
        self.store.audit(
            "preemption",
            {
                "session": w.id,
                "tenant": w.tenant_id,
                "victim": victim.id,
                "victim_kind": victim.kind,
                "victim_tenant": victim.tenant_id,
                "node": plan.node,
                "lost_s": round(plan.lost_s, 1),
                "candidates": [{"workload": v, "node": n, "lost_s": round(c, 1)} for v, n, c in plan.candidates],
            },
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
                workload_id=w.id, kind=w.kind, loads=loads, lost_s=max(lost, 0.0), stopping=stopping(w)
            )
        return holders
