"""Running work the network's rules no longer allow: whose tenant is refused, or where it runs.

Admission and placement check the rules once, when work is submitted and placed. The facts
they read can change while it runs: an operator rejects a tenant's KYC, a tenant's country
becomes embargoed, a provider's KYC is rejected, a geofence is added. Each tick the supervisor
asks this view, for each running workload, whether its tenant may still run work at all
(``admit_tenant``: if not, the work stops, failed, not retried) and which of its nodes the rules
now keep it off (``node_rejection``, the rule placement applies: the work moves off them and is
placed again where the rules allow, as a drain moves it). The rules live in
``runner.core.policy``; this module only reads the facts they need, at most every
``REFRESH_S``, once for all workloads.
"""

from __future__ import annotations

import time

from runner.core.network import NetworkConfig
from runner.core.policy import KYC, NodeFacts, NodeState, Reason, TenantFacts, admit_tenant, node_rejection
from runner.store import Store

#: How often the facts are read again (every workload of a tick reads the same ones).
REFRESH_S = 0.5


class Compliance:
    def __init__(self, store: Store, config: NetworkConfig) -> None:
        self.store = store
        self.config = config
        self._read_at = float("-inf")
        self._tenants: dict[str, TenantFacts] = {}
        self._nodes: list[NodeFacts] = []

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at < REFRESH_S:
            return
        self._tenants = {
            t.id: TenantFacts(id=t.id, country=t.country, kyc=KYC(t.kyc)) for t in self.store.list_tenants()
        }
        provider_kyc = {p.id: KYC(p.kyc) for p in self.store.list_providers()}
        self._nodes = [
            NodeFacts(
                name=n.name,
                provider=n.provider_id,
                provider_kyc=provider_kyc.get(n.provider_id, KYC.PENDING),
                country=n.country,
                region=n.region,
                gpu_model=n.gpu_model,
                state=NodeState(n.state),
            )
            for n in self.store.registry()
        ]
        self._read_at = time.monotonic()

    def tenant_refusal(self, tenant_id: str) -> str | None:
        """Why the tenant may run no work now (its KYC), or None."""
        self._refresh()
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return None
        verdict = admit_tenant(tenant)
        return None if verdict else verdict.reason

    def nodes_ruled_out(self, tenant_id: str) -> dict[str, str]:
        """Node -> why the rules keep this tenant's work off it now, for the rules about who and
        where (provider KYC, geofences, export control). A node's own state (draining,
        suspended) is not among them: drains have their own path and words."""
        self._refresh()
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return {}
        out = {}
        for node in self._nodes:
            rejection = node_rejection(tenant, node, self.config.policy)
            if rejection is not None and rejection[0] is not Reason.NODE_STATE:
                out[node.name] = rejection[1]
        return out
