"""Money at work in the control plane: metering running replicas per second into the ledger,
tenants' budgets, and slashing providers (lost work, SLA breaches). The amounts and postings are
the store's (``Store.meter``, ``Store.slash``: one transaction each); this module decides when.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from runner.core import ledger
from runner.core.ledger import SlashCause
from runner.core.network import NetworkConfig
from runner.core.sla import UptimeDay as UptimeFacts
from runner.core.sla import utc_day
from runner.core.states import ReplicaState
from runner.runtime import ReplicaStatus
from runner.store import Replica, Store, Workload
from runner.supervisor.cluster_view import ClusterView

log = logging.getLogger("runner.metering")

METER_S = 5.0  # how often running replicas are billed up to now


class Metering:
    """Bills, budgets and slashes, each at most once (the store's keys), on the supervisor's tick."""

    def __init__(self, store: Store, config: NetworkConfig, cluster: ClusterView) -> None:
        self.store = store
        self.config = config
        self.cluster = cluster
        self._metered_at = 0.0

    # -- money -----------------------------------------------------------------------------------------
    def meter(
        self,
        replicas: Iterable[Replica],
        *,
        force: bool = False,
        guard: Callable[[str, Callable[[], Any]], Any] | None = None,
    ) -> None:
        """Bill running replicas up to now (every ``METER_S``), or these replicas now (``force``).
        ``guard(workload_id, bill)`` runs each replica's billing, so that a fault in one is its
        workload's alone (the supervisor's isolation); without it, a fault propagates."""
        if not force and time.monotonic() - self._metered_at < METER_S:
            return
        if not force:
            self._metered_at = time.monotonic()
        now = time.time()
        for rep in replicas:
            if rep.started_at is None:
                continue
            bill = functools.partial(self.store.meter, rep.key, now, fee_bps=self.config.market.fee_bps)
            if guard is None:
                bill()
            else:
                guard(rep.workload_id, bill)

    def over_budget(self, tenant_id: str) -> str | None:
        """Why a tenant may spend no more (its budget is used up), or None."""
        t = self.store.get_tenant(tenant_id)
        if t.budget_micros is None:
            return None
        spent = self.store.tenant_spent(tenant_id)
        if spent >= t.budget_micros:
            return f"budget exhausted: spent {ledger.usd(spent)} of {ledger.usd(t.budget_micros)} USD"
        return None

    def replica_finished(self, w: Workload, rep: Replica, status: ReplicaStatus) -> None:
        """Bill the replica to its end; slash its provider when its node vanished under it."""
        self.meter([rep], force=True)
        if status.state is ReplicaState.LOST and not self.cluster.alive(rep.node) and rep.provider_id:
            tx = self.store.slash(
                provider=rep.provider_id,
                cause=SlashCause.LOST_WORK,
                config=self.config.market,
                key=f"slash:lost:{rep.key}",
                node=rep.node,
                tenant=w.tenant_id,
                memo=f"node {rep.node} vanished running {rep.key}",
            )
            if tx is not None:
                log.warning("slashed %s: %s", rep.provider_id, tx.memo)

    def settle_sla(self) -> None:
        """Penalise each finished UTC day a node spent offline beyond the SLA's allowance, once."""
        today = utc_day(time.time())
        since = utc_day(time.time() - 3 * 86_400)
        for day in self.store.uptime_days(since_day=since):
            facts = UptimeFacts(day.node, day.day, day.observed_s, day.online_s)
            if day.day >= today or day.breach_recorded or facts.offline_s <= self.config.sla.max_daily_offline_s:
                continue
            if self.store.mark_breach_recorded(day.node, day.day):
                node = self.store.get_node(day.node)
                self.store.slash(
                    provider=node.provider_id,
                    cause=SlashCause.SLA_BREACH,
                    config=self.config.market,
                    key=f"slash:sla:{day.node}:{day.day}",
                    node=day.node,
                    memo=f"{day.node} offline {facts.offline_s / 60:.0f} min on {day.day}",
                )
