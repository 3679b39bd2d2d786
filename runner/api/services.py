"""Routes for inference services: the tenant's view, and what the gateway needs.

    GET /v1/services             the tenant's live services (endpoint, size, replicas and rates)
    GET /v1/services/{id}        one service (ended ones too)
    GET /v1/whoami               whose key this is: the gateway authenticates requests with it
    GET /v1/gateway/routes       every live service's routable replicas (operator key: the gateway)

A route lists a replica once it runs and has published the service's port; the gateway then
waits for its ``/healthz`` itself. Replicas the service controller is retiring are left out, so
the gateway stops sending to them before they get SIGTERM.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query

from runner.api import schemas
from runner.api.auth import Anyone, Operator, Tenant
from runner.api.workloads import Ctx
from runner.core.contract import service_port
from runner.core.errors import NotFoundError
from runner.core.policy import KYC, TenantFacts, admit_tenant
from runner.core.services import service_view
from runner.core.sessions import player_url
from runner.core.spec import AnySpec
from runner.core.states import ReplicaState, WorkloadState
from runner.gateway.address import gateway_url
from runner.store import Workload

router = APIRouter()

#: States in which a service may have replicas to route to.
ROUTED = (WorkloadState.PLACED.value, WorkloadState.STARTING.value, WorkloadState.RUNNING.value)


def _service(ctx: Any, workload_id: str, tenant_id: str) -> Workload:
    w = ctx.store.get_workload(workload_id, tenant_id)
    if w.kind != "inference":
        raise NotFoundError(f"{workload_id} is a {w.kind} workload, not a service. To fix: runner ls")
    return w


def view(ctx: Any, w: Workload) -> dict[str, Any]:
    spec = ctx.supervisor.spec(w) if not WorkloadState(w.state).is_terminal() else _parse(w)
    events = ctx.store.events(w.id)
    return service_view(
        w, spec, ctx.store.replicas(w.id), events, gateway=gateway_url(ctx.supervisor.settings), now=time.time()
    )


def _parse(w: Workload) -> AnySpec:
    from runner.core.spec import parse_workload

    return parse_workload(w.spec, source=w.source or w.id)


@router.get("/v1/services", response_model=list[schemas.Service])
def list_services(
    tenant_id: Tenant, ctx: Ctx, all: bool = False, limit: int = Query(100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """The tenant's services, newest first; ended ones only with ``all``."""
    rows = ctx.store.list_workloads(tenant_id=tenant_id, kind="inference", live_only=not all, limit=limit)
    return [view(ctx, w) for w in rows]


@router.get("/v1/services/{workload_id}", response_model=schemas.Service)
def get_service(tenant_id: Tenant, ctx: Ctx, workload_id: str) -> dict[str, Any]:
    return view(ctx, _service(ctx, workload_id, tenant_id))


@router.get("/v1/whoami", response_model=schemas.Whoami)
def whoami(who: Anyone, ctx: Ctx) -> dict[str, Any]:
    """Whose key this is (a tenant's, or the operator's), and for a tenant's whether it may call
    its services now: the gateway serves only tenants the KYC gate admits."""
    refused = None
    if who.tenant_id is not None:
        t = ctx.store.get_tenant(who.tenant_id)
        verdict = admit_tenant(TenantFacts(id=t.id, country=t.country, kyc=KYC(t.kyc)))
        refused = None if verdict else verdict.reason
    return {"tenant": who.tenant_id, "operator": who.operator, "refused": refused}


@router.get("/v1/gateway/routes", response_model=schemas.GatewayRoutes)
def routes(_: Operator, ctx: Ctx) -> dict[str, Any]:
    """Every live service with the replicas the gateway may route to."""
    sup = ctx.supervisor
    unroutable = sup.controllers["inference"].unroutable
    services = []
    for w in ctx.store.active_workloads():
        if w.kind != "inference" or w.state not in ROUTED:
            continue
        port = service_port(sup.spec(w))
        backends = []
        for rep in ctx.store.replicas(w.id):
            if rep.finished_at is not None or rep.state != ReplicaState.RUNNING.value or rep.key in unroutable:
                continue
            node = sup.cluster.nodes.get(rep.node)
            url = player_url(rep.ports, port, node_address=node.address if node else "")
            if url:
                backends.append({"key": rep.key, "node": rep.node, "url": url.rstrip("/")})
        services.append(
            {
                "id": w.id,
                "name": w.name,
                "tenant": w.tenant_id,
                "created_at": w.created_at,
                "state": w.state,
                "backends": backends,
            }
        )
    return {"services": services, "access_epoch": ctx.store.access_epoch()}
