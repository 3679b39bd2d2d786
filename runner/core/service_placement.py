"""Placing one more replica of a service that already runs somewhere. Pure.

A gang is placed whole (``Placer.decide``); a service adds replicas one at a time, to replace a
dead one, to move one off a draining node, or to scale up, while its other replicas keep
serving. Such a replica should go where the service is not yet: a node the service does not use
(so one lost node takes one replica, not two) and, when the spec asks for spread, a provider it
does not use either. When no such node has room it may still share a node or a provider with
its siblings: a service with a replica on a crowded node beats a service one replica short.
Every rule of placement (policy, geofence, price, capacity) still holds in every case; only
the "distinct" preference relaxes, in this order:

    distinct node and new provider (spread only) -> distinct node -> any node with room
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from runner.core.demand import Demand
from runner.core.placement import Decision, Placer
from runner.core.policy import TenantFacts


class ServicePlacer(Placer):
    """A ``Placer`` that can also place replicas beside the ones a service already runs."""

    def decide_beside(self, d: Demand, tenant: TenantFacts, beside: Sequence[str], *, commit: bool = True) -> Decision:
        """Nodes for ``d.replicas`` more replicas of a service that runs on ``beside`` (its live
        replicas' nodes), preferring nodes and providers it does not use yet; commits the load."""
        t = self.table
        cls = self._class(d, tenant)
        used = [t.position[n] for n in beside if n in t.position]
        used_providers = {int(t.provider[i]) for i in used}
        tiers: list[tuple[bool, bool]] = [(True, True)] if d.spread_providers else []
        tiers += [(True, False), (False, False)]
        for distinct, new_provider in tiers:
            demand = replace(d, distinct_nodes=distinct)
            chosen: list[int] = []
            taken = list(used) if distinct else []
            providers: set[int] | None = set(used_providers) if new_provider else None
            for _ in range(d.replicas):
                i = self._walk(cls, demand, taken, providers, may_skip=not chosen)
                if i is None:
                    break
                chosen.append(i)
                taken.append(i)
                if providers is not None:
                    providers.add(int(t.provider[i]))
                self.table.add_load(i, d.cpu, d.gpus, d.memory_mb)  # the next replica sees this one
            for i in chosen:  # tentative load off again; ``commit`` adds it for real
                self.table.remove_load(i, d.cpu, d.gpus, d.memory_mb)
            if len(chosen) == d.replicas:
                names = tuple(t.names[i] for i in chosen)
                if commit:
                    self.commit(names, d)
                shared = "" if distinct else " (no node apart from the service's others has room)"
                return Decision(
                    nodes=names,
                    scores=tuple(cls.ranking.score_of[i] for i in chosen),
                    total_nodes=len(t),
                    message=f"placed on {', '.join(names)}{shared}",
                )
        return self._refusal(replace(d, distinct_nodes=False), tenant)
