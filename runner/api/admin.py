"""The operator's routes: KYC, budgets, stakes, join tokens, image pins, node drains, challenges, audit, books.

Every change here is audited by the store in the same transaction as the change itself.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from runner.api import schemas
from runner.api.auth import Operator, forget_cached_keys
from runner.api.context import AppContext, context
from runner.api.keys import key_json
from runner.api.nodes import bill_json, statement_json
from runner.core import ledger
from runner.core.approval import ApprovedMachine, machine_gpus, simulated_problem
from runner.core.errors import PolicyError, UserError
from runner.core.events import Stop, StopReason
from runner.core.image_refs import DIGEST
from runner.core.ledger import SlashCause
from runner.core.policy import KYC, NodeState
from runner.core.sla import UptimeDay as UptimeFacts
from runner.core.sla import day_breached, monthly_uptime, utc_day
from runner.core.spec.fields import MAX_ROW_ID, MAX_USD, Usd, bounded
from runner.onboarding import NAME
from runner.store import AllowedEndpoint, ImagePin, Provider, Tenant, key_id

router = APIRouter(prefix="/v1/admin")
Ctx = Annotated[AppContext, Depends(context)]


def tenant_json(ctx: AppContext, t: Tenant) -> dict[str, Any]:
    return {
        "id": t.id,
        "country": t.country,
        "kyc": t.kyc,
        "budget_micros": t.budget_micros,
        "spent_micros": ctx.store.tenant_spent(t.id),
        "created_at": t.created_at,
    }


def provider_json(ctx: AppContext, p: Provider) -> dict[str, Any]:
    return {
        "id": p.id,
        "country": p.country,
        "kyc": p.kyc,
        "stake_micros": ctx.store.balance(ledger.stake_account(p.id)),
        "nodes": [n.name for n in ctx.store.registry() if n.provider_id == p.id],
        "created_at": p.created_at,
    }


def _usd(value: float | None) -> int | None:
    return None if value is None else ledger.to_micros(value)


#: A stake deposit: at least a micro-USD, the ledger's unit (a smaller amount would round to nothing,
#: which a deposit may not be), at most ``MAX_USD`` (every amount here is finite and bounded).
Deposit = bounded(float, ge=1 / ledger.MICROS, le=MAX_USD)
#: A join token's lifetime in seconds: at most 30 days.
TokenTtl = bounded(float, gt=0, le=30 * 86_400)


# -- tenants -----------------------------------------------------------------------------------------
@router.get("/tenants", response_model=list[schemas.TenantInfo])
def tenants(_: Operator, ctx: Ctx) -> list[dict[str, Any]]:
    return [tenant_json(ctx, t) for t in ctx.store.list_tenants()]


@router.post("/tenants", status_code=201, response_model=schemas.TenantInfo)
def add_tenant(
    _: Operator,
    ctx: Ctx,
    id: Annotated[str, Body()],
    country: Annotated[str, Body(pattern=r"^[A-Za-z]{2}$")],
    kyc: Annotated[KYC, Body()] = KYC.PENDING,
    budget_usd: Annotated[Usd | None, Body()] = None,
) -> dict[str, Any]:
    t = ctx.store.add_tenant(id, country=country, kyc=kyc, budget_micros=_usd(budget_usd))
    return tenant_json(ctx, t)


@router.post("/tenants/{tenant_id}", response_model=schemas.TenantInfo)
def update_tenant(
    _: Operator,
    ctx: Ctx,
    request: Request,
    tenant_id: str,
    kyc: Annotated[KYC | None, Body()] = None,
    budget_usd: Annotated[Usd | None, Body()] = None,
    clear_budget: Annotated[bool, Body()] = False,
    country: Annotated[str | None, Body(pattern=r"^[A-Za-z]{2}$")] = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if kyc is not None:
        fields["kyc"] = kyc.value
    if budget_usd is not None or clear_budget:
        fields["budget_micros"] = _usd(budget_usd)
    if country is not None:
        fields["country"] = country.upper()
    if not fields:
        raise UserError("nothing to change: give kyc, budget_usd, clear_budget or country")
    t = ctx.store.set_tenant(tenant_id, **fields)
    forget_cached_keys(request)  # the gateway asks again whether this tenant may be served
    ctx.supervisor.wake()
    return tenant_json(ctx, t)


@router.post("/tenants/{tenant_id}/keys", status_code=201, response_model=schemas.NewApiKey)
def tenant_key(_: Operator, ctx: Ctx, tenant_id: str) -> dict[str, Any]:
    """A new API key for the tenant (shown once; only its hash is kept)."""
    ctx.store.get_tenant(tenant_id)
    key = ctx.store.create_api_key(tenant_id)
    ctx.store.audit("tenant.key", {"tenant": tenant_id, "key": key_id(key), "by": "operator"})
    return {"tenant": tenant_id, "api_key": key, "key_id": key_id(key)}


@router.get("/tenants/{tenant_id}/keys", response_model=list[schemas.ApiKeyInfo])
def tenant_keys(_: Operator, ctx: Ctx, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's keys by id, revoked ones included."""
    ctx.store.get_tenant(tenant_id)
    return [key_json(row) for row in ctx.store.api_keys(tenant_id)]


@router.delete("/tenants/{tenant_id}/keys/{key_id}", response_model=schemas.ApiKeyInfo)
def revoke_tenant_key(_: Operator, ctx: Ctx, request: Request, tenant_id: str, key_id: str) -> dict[str, Any]:
    """Revoke a tenant's key (a leaked one, say): refused everywhere from now on."""
    row = ctx.store.revoke_api_key(tenant_id, key_id, by="operator")
    forget_cached_keys(request)
    return key_json(row)


# -- providers ---------------------------------------------------------------------------------------
@router.get("/providers", response_model=list[schemas.ProviderInfo])
def providers(_: Operator, ctx: Ctx) -> list[dict[str, Any]]:
    return [provider_json(ctx, p) for p in ctx.store.list_providers()]


@router.post("/providers", status_code=201, response_model=schemas.ProviderInfo)
def add_provider(
    _: Operator,
    ctx: Ctx,
    id: Annotated[str, Body(pattern=r"^[a-z][a-z0-9-]{0,62}$")],
    country: Annotated[str, Body(pattern=r"^[A-Za-z]{2}$")],
    kyc: Annotated[KYC, Body()] = KYC.PENDING,
    stake_usd: Annotated[Usd, Body()] = 0.0,
) -> dict[str, Any]:
    stake = _usd(stake_usd) or 0  # under half a micro-USD is no stake at all: the ledger counts micros
    p = ctx.store.add_provider(id, country=country, kyc=kyc)
    if stake > 0:
        ctx.store.post(ledger.stake_deposit(id, stake, key=f"stake:{id}:initial"))
    return provider_json(ctx, p)


@router.post("/providers/{provider_id}/kyc", response_model=schemas.ProviderInfo)
def provider_kyc(_: Operator, ctx: Ctx, provider_id: str, kyc: Annotated[KYC, Body(embed=True)]) -> dict[str, Any]:
    p = ctx.store.set_provider_kyc(provider_id, kyc.value)
    ctx.supervisor.wake()
    return provider_json(ctx, p)


@router.post("/providers/{provider_id}/stake", response_model=schemas.ProviderInfo)
def provider_stake(
    _: Operator,
    ctx: Ctx,
    provider_id: str,
    usd: Annotated[Deposit, Body(embed=True)],
    key: Annotated[str, Body(embed=True, min_length=1)],
) -> dict[str, Any]:
    """Deposit stake; ``key`` makes a retried deposit count once."""
    p = ctx.store.get_provider(provider_id)
    ctx.store.post(ledger.stake_deposit(provider_id, _usd(usd) or 0, key=f"stake:{provider_id}:{key}"))
    return provider_json(ctx, p)


@router.post("/tokens", status_code=201, response_model=schemas.NewJoinToken)
def issue_token(
    _: Operator,
    ctx: Ctx,
    provider: Annotated[str, Body()],
    region: Annotated[str, Body(pattern=NAME)],
    country: Annotated[str, Body(pattern=r"^[A-Z]{2}$")],
    gpu_model: Annotated[str | None, Body()] = None,
    gpu_count: Annotated[int | None, Body(ge=0, le=64)] = None,
    simulated: Annotated[bool, Body()] = False,
    ttl_s: Annotated[TokenTtl, Body()] = 3600.0,
) -> dict[str, Any]:
    """A join token for one machine of ``provider``, bound to what the operator approved for it:
    where it stands and its GPUs (``runner.core.approval``); the machine may claim nothing else."""
    model, count = machine_gpus(gpu_model, gpu_count)
    problem = simulated_problem(
        simulated, cpu_mode=ctx.supervisor.settings.shared_filesystem, network_allows=ctx.config.simulated_gpus
    )
    if problem:
        raise PolicyError(f"simulated: {problem}")
    approved = ApprovedMachine(region=region, country=country, gpu_model=model, gpu_count=count, simulated=simulated)
    token = ctx.store.issue_join_token(provider, ttl_s=ttl_s, approved=approved)
    return {"provider": provider, "token": token, "ttl_s": ttl_s}


# -- images ------------------------------------------------------------------------------------------
def image_pin_json(pin: ImagePin) -> dict[str, Any]:
    return {"reference": pin.reference, "digest": pin.digest, "pinned_at": pin.pinned_at}


@router.put("/images", response_model=schemas.ImagePin)
def pin_image(
    _: Operator,
    ctx: Ctx,
    reference: Annotated[str, Body(min_length=1, max_length=255)],
    digest: Annotated[str, Body(pattern=DIGEST.pattern)],
) -> dict[str, Any]:
    """Record what the operator pushed: nodes run ``reference`` only as ``digest`` from now on."""
    return image_pin_json(ctx.store.pin_image(reference, digest))


@router.get("/images", response_model=list[schemas.ImagePin])
def image_pins(_: Operator, ctx: Ctx) -> list[dict[str, Any]]:
    return [image_pin_json(p) for p in ctx.store.image_pins()]


# -- endpoints ---------------------------------------------------------------------------------------
def endpoint_json(row: AllowedEndpoint) -> dict[str, Any]:
    return {"endpoint": row.endpoint, "note": row.note, "allowed_at": row.allowed_at}


@router.put("/endpoints", response_model=schemas.AllowedEndpoint)
def allow_endpoint(
    _: Operator,
    ctx: Ctx,
    endpoint: Annotated[str, Body(min_length=1, max_length=300)],
    note: Annotated[str, Body(max_length=500)] = "",
) -> dict[str, Any]:
    """Let the control plane open ``endpoint`` for tenants though it resolves inside a network
    (a store a customer brought on premises): ``runner.core.egress``."""
    return endpoint_json(ctx.store.allow_endpoint(endpoint, note=note))


@router.get("/endpoints", response_model=list[schemas.AllowedEndpoint])
def allowed_endpoints(_: Operator, ctx: Ctx) -> list[dict[str, Any]]:
    return [endpoint_json(row) for row in ctx.store.allowed_endpoints()]


@router.delete("/endpoints", response_model=schemas.AllowedEndpoint)
def remove_endpoint(
    _: Operator, ctx: Ctx, endpoint: Annotated[str, Query(min_length=1, max_length=300)]
) -> dict[str, Any]:
    """No longer open ``endpoint`` for tenants; answers what was removed."""
    return endpoint_json(ctx.store.remove_endpoint(endpoint))


# -- nodes -------------------------------------------------------------------------------------------
@router.post("/nodes/{name}/drain", response_model=schemas.NodeMove)
def drain(_: Operator, ctx: Ctx, name: str) -> dict[str, Any]:
    """No new work; running work is stopped gracefully and placed elsewhere; then offboarded."""
    node = ctx.store.move_node(name, NodeState.DRAINING, "draining on the operator's request", by="operator")
    ctx.supervisor.wake()
    return {"node": name, "state": node.state}


@router.post("/nodes/{name}/offboard", response_model=schemas.Offboarded)
def offboard(_: Operator, ctx: Ctx, name: str) -> dict[str, Any]:
    """Remove a node now. With work still on it, that is leaving without draining: slashed."""
    node = ctx.store.get_node(name)
    running = [r for r in ctx.store.active_replicas() if r.node == name]
    ctx.store.move_node(
        name, NodeState.OFFBOARDED, "offboarded" + (" without draining" if running else ""), by="operator"
    )
    slashed = None
    # Once per offboarding: a retried request (the node already offboarded, its work not moved off
    # yet) would otherwise slash again under a new key (the state's new timestamp).
    if running and node.state != NodeState.OFFBOARDED.value:
        tx = ctx.store.slash(
            provider=node.provider_id,
            cause=SlashCause.UNDRAINED_OFFBOARD,
            config=ctx.config.market,
            key=f"slash:offboard:{name}:{int(node.state_changed_at)}",
            node=name,
            memo=f"{name} offboarded with {len(running)} replica(s) running",
        )
        if tx is not None:
            slashed = -sum(p.amount for p in tx.postings if p.account == ledger.stake_account(node.provider_id))
    if running:
        for workload_id in {r.workload_id for r in running}:
            stop = Stop(StopReason.RELOCATE, f"move off offboarded node {name}", {"nodes": [name]})
            ctx.store.update_workload(workload_id, **stop.fields())
    ctx.supervisor.wake()
    return {
        "node": name,
        "state": NodeState.OFFBOARDED.value,
        "replicas_moved": len(running),
        "slashed_micros": slashed,
    }


@router.post("/nodes/{name}/activate", response_model=schemas.NodeMove)
def activate(_: Operator, ctx: Ctx, name: str) -> dict[str, Any]:
    """Bring a suspended or draining node back after review."""
    node = ctx.store.move_node(name, NodeState.ACTIVE, "activated by the operator", by="operator", challenge_failures=0)
    ctx.supervisor.wake()
    return {"node": name, "state": node.state}


@router.post("/nodes/{name}/challenge", response_model=schemas.Challenge)
def challenge(_: Operator, ctx: Ctx, name: str) -> dict[str, Any]:
    return ctx.supervisor.checker.challenge(name)


@router.get("/nodes/{name}/checks", response_model=list[schemas.CheckRow])
def checks(_: Operator, ctx: Ctx, name: str, limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    return [
        {"ts": c.ts, "kind": c.kind, "ok": c.ok, "measured": c.measured, "expected": c.expected, "message": c.message}
        for c in ctx.store.checks(name, limit=limit)
    ]


@router.get("/nodes/{name}/uptime", response_model=schemas.Uptime)
def uptime(_: Operator, ctx: Ctx, name: str, days: int = Query(30, ge=1, le=366)) -> dict[str, Any]:
    """Uptime per UTC day against the SLA: offline minutes, breaches, the month's uptime."""
    ctx.store.get_node(name)
    sla = ctx.config.sla
    since = utc_day(time.time() - days * 86_400)
    rows = [UptimeFacts(d.node, d.day, d.observed_s, d.online_s) for d in ctx.store.uptime_days(name, since_day=since)]
    month = monthly_uptime(rows[-30:])
    return {
        "node": name,
        "sla": {"monthly_uptime": sla.monthly_uptime, "max_daily_offline_s": sla.max_daily_offline_s},
        "monthly_uptime": month,
        "meets_sla": month is None or month >= sla.monthly_uptime,
        "days": [
            {
                "day": r.day,
                "observed_s": r.observed_s,
                "online_s": r.online_s,
                "offline_s": r.offline_s,
                "breached": day_breached(r, sla),
            }
            for r in rows
        ],
    }


# -- audit and books ---------------------------------------------------------------------------------
@router.get("/audit", response_model=list[schemas.AuditEntry])
def audit(
    _: Operator,
    ctx: Ctx,
    after: int = Query(0, ge=0, le=MAX_ROW_ID),
    limit: int = Query(100, ge=1, le=10_000),
    kind: str | None = None,
) -> list[dict[str, Any]]:
    return [
        {"seq": e.seq, "ts": e.ts, "kind": e.kind, "payload": e.payload, "hash": e.hash}
        for e in ctx.store.audit_entries(after_seq=after, limit=limit, kind=kind)
    ]


@router.get("/audit/verify", response_model=schemas.AuditVerify)
def audit_verify(_: Operator, ctx: Ctx) -> dict[str, Any]:
    check = ctx.store.verify_audit()
    return {"ok": check.ok, "entries": check.entries, "first_bad_seq": check.first_bad_seq, "problem": check.problem}


@router.get("/bills", response_model=list[schemas.Bill])
def bills(_: Operator, ctx: Ctx, tenant: str | None = None) -> list[dict[str, Any]]:
    ids = [tenant] if tenant else [t.id for t in ctx.store.list_tenants()]
    return [bill_json(ctx, t) for t in ids]


@router.get("/earnings", response_model=list[schemas.Earnings])
def earnings(_: Operator, ctx: Ctx, provider: str | None = None) -> list[dict[str, Any]]:
    ids = [provider] if provider else [p.id for p in ctx.store.list_providers()]
    out = []
    for pid in ids:
        ctx.store.get_provider(pid)
        txs = ctx.store.transactions(accounts=[ledger.provider_account(pid), ledger.stake_account(pid)])
        mine = frozenset({ledger.provider_account(pid), ledger.stake_account(pid)})
        out.append({"provider": pid, **statement_json(ledger.provider_statement(pid, txs), mine)})
    return out
