"""Routes about nodes and money that tenants (and joining machines) use: health, the fleet,
joining, a tenant's own bill."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from runner.api import schemas
from runner.api.auth import Anyone, Tenant
from runner.api.context import AppContext, context
from runner.core import certs, ledger
from runner.core.errors import NotFoundError, UserError
from runner.onboarding import JoinRequest, onboard
from runner.store import NodeRecord
from runner.tls import addresses_for

router = APIRouter()
PEM = "application/x-pem-file"
Ctx = Annotated[AppContext, Depends(context)]


def statement_json(statement: ledger.Statement, accounts: frozenset[str] | None = None) -> dict[str, Any]:
    """A statement as JSON; each line's ``amount`` is its net effect on ``accounts`` (default: the
    statement's own account)."""
    mine = accounts or frozenset({statement.account})
    return {
        "account": statement.account,
        "totals": dict(statement.totals),
        "lines": [
            {
                "key": tx.key,
                "kind": tx.kind.value,
                "memo": tx.memo,
                "refs": dict(tx.refs),
                "amount": sum(p.amount for p in tx.postings if p.account in mine),
            }
            for tx in statement.lines
        ],
    }


def bill_json(ctx: AppContext, tenant_id: str) -> dict[str, Any]:
    t = ctx.store.get_tenant(tenant_id)
    txs = ctx.store.transactions(account=ledger.tenant_account(tenant_id))
    return {"tenant": tenant_id, **statement_json(ledger.tenant_statement(tenant_id, txs, t.budget_micros))}


def nodes_json(ctx: AppContext) -> list[dict[str, Any]]:
    """Ray's live view joined with the registry: labels, liveness, lifecycle, price, benchmark."""
    sup = ctx.supervisor
    running: dict[str, int] = {}
    for rep in ctx.store.active_replicas():
        running[rep.node] = running.get(rep.node, 0) + 1
    registry: dict[str, NodeRecord] = {n.name: n for n in ctx.store.registry()}
    reliability = {row.name: row.reliability for row in sup.placing.rows()}
    out = []
    for name in sorted(set(registry) | set(sup.cluster.nodes)):
        ray_node, reg = sup.cluster.nodes.get(name), registry.get(name)
        out.append(
            {
                "name": name,
                "alive": bool(ray_node and ray_node.alive),
                "labels": ray_node.labels if ray_node else {},
                "resources": ray_node.resources if ray_node else {},
                "address": ray_node.address if ray_node else "",
                "replicas": running.get(name, 0),
                "state": reg.state if reg else "unregistered",
                "provider": reg.provider_id if reg else "",
                "region": reg.region if reg else "",
                "country": reg.country if reg else "",
                "gpu_model": reg.gpu_model if reg else None,
                "gpu_count": reg.gpu_count if reg else 0,
                "gpu_price_micros": reg.gpu_price_micros if reg else 0,
                "cpu_price_micros": reg.cpu_price_micros if reg else 0,
                "verified_tflops": reg.verified_tflops if reg else 0.0,
                "simulated": reg.simulated if reg else None,
                "reliability": reliability.get(name),
                "challenge_failures": reg.challenge_failures if reg else 0,
                "message": reg.message if reg else "not in the registry: joined Ray without `runner node join`",
            }
        )
    return out


@router.get("/v1/health", response_model=schemas.Health)
def health(_: Anyone, ctx: Ctx) -> dict[str, Any]:
    return {
        "ok": True,
        "runtime": ctx.runtime_name,
        "nodes": sum(n.alive for n in ctx.supervisor.cluster.nodes.values()),
    }


@router.get("/v1/nodes", response_model=list[schemas.Node])
def nodes(_: Anyone, ctx: Ctx) -> list[dict[str, Any]]:
    return nodes_json(ctx)


@router.get(
    "/v1/ca",
    response_class=PlainTextResponse,  # its media type is PEM's, named below
    responses={
        200: {"description": "The network's CA certificate, PEM", "content": {PEM: {"schema": {"type": "string"}}}}
    },
)
def network_ca(ctx: Ctx) -> PlainTextResponse:
    """The network's CA certificate (public; no key needed): a joining machine checks it against
    the pin in its join command (``--ca-cert-hash``) before it trusts this server with anything."""
    if ctx.authority is None:
        raise NotFoundError("this network runs without TLS: it has no CA")
    return PlainTextResponse(ctx.authority.cert_pem.decode(), media_type=PEM)


def node_certificate(ctx: AppContext, request: JoinRequest, peer: str) -> str:
    """A certificate for the joining machine's own key, naming the address this server saw it
    at (never one it asks for: it cannot be certified as the head, or as another machine)."""
    if ctx.authority is None:
        return ""
    if not request.tls_csr:
        raise UserError("tls_csr: required: this network runs TLS (runner node join sends it)")
    try:
        return certs.sign(
            ctx.authority,
            request.tls_csr.encode(),
            common_name=request.name,
            organization=request.provider,
            addresses=addresses_for(peer),
        ).decode()
    except certs.CertError as exc:
        raise UserError(str(exc)) from None


@router.post("/v1/nodes/join", response_model=schemas.JoinGrant)
def join(request: JoinRequest, ctx: Ctx, http: Request) -> dict[str, Any]:
    """A provider machine joins with a join token (its credential here, instead of an API key).
    Its certificate is made first (a bad request spends no token) and handed out only with a grant."""
    cert = node_certificate(ctx, request, http.client.host if http.client else "127.0.0.1")
    grant = onboard(
        ctx.store,
        ctx.config,
        request,
        ray_address=ctx.ray_address,
        ray_token=ctx.ray_token,
        control_public_key=ctx.supervisor.cluster.control.public_hex(),
        cpu_mode=ctx.supervisor.settings.shared_filesystem,
        in_cluster=ctx.supervisor.cluster.alive,
        tls_cert=cert,
    )
    ctx.supervisor.wake()
    return grant.model_dump()  # a dict: a TypedDict answer validates dicts, not objects


@router.get("/v1/bill", response_model=schemas.Bill)
def bill(tenant_id: Tenant, ctx: Ctx) -> dict[str, Any]:
    return bill_json(ctx, tenant_id)
