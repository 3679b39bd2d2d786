"""A tenant's own API keys: list, make, rotate, revoke (``runner keys``).

A key is shown once, when it is made; afterwards it is named by its ``key_id`` (the start of its
hash). Revoking or rotating a key drops the control plane's cache of keys at once, and the
gateway drops its own when it next reads its routes (``access_epoch``, every half second): a
revoked key is refused everywhere within a second.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from runner.api import schemas
from runner.api.auth import Tenant, forget_cached_keys
from runner.api.workloads import Ctx
from runner.store import ApiKey, hash_key, key_id

router = APIRouter()


def key_json(row: ApiKey, calling_key: str | None = None) -> dict[str, Any]:
    return {
        "key_id": row.key_id,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
        "current": calling_key is not None and row.key_hash == hash_key(calling_key),
    }


def _calling_key(authorization: str | None) -> str:
    return (authorization or "").removeprefix("Bearer ").strip()


@router.get("/v1/keys", response_model=list[schemas.ApiKeyInfo])
def list_keys(
    tenant_id: Tenant, ctx: Ctx, authorization: Annotated[str | None, Header()] = None
) -> list[dict[str, Any]]:
    """The tenant's keys, revoked ones included; ``current`` marks the key of this request."""
    return [key_json(row, _calling_key(authorization)) for row in ctx.store.api_keys(tenant_id)]


@router.post("/v1/keys", status_code=201, response_model=schemas.NewApiKey)
def new_key(tenant_id: Tenant, ctx: Ctx) -> dict[str, Any]:
    """Another key for this tenant (shown once; only its hash is kept)."""
    key = ctx.store.create_api_key(tenant_id)
    ctx.store.audit("tenant.key", {"tenant": tenant_id, "key": key_id(key), "by": "tenant"})
    return {"tenant": tenant_id, "api_key": key, "key_id": key_id(key)}


@router.post("/v1/keys/rotate", response_model=schemas.NewApiKey)
def rotate_key(
    tenant_id: Tenant, ctx: Ctx, request: Request, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    """A new key in place of the one this request is made with, which stops working now."""
    old = key_id(_calling_key(authorization))
    key, row = ctx.store.rotate_api_key(tenant_id, old, by="tenant")
    forget_cached_keys(request)
    return {"tenant": tenant_id, "api_key": key, "key_id": row.key_id}


@router.delete("/v1/keys/{key_id}", response_model=schemas.ApiKeyInfo)
def revoke_key(tenant_id: Tenant, ctx: Ctx, request: Request, key_id: str) -> dict[str, Any]:
    """Revoke one of this tenant's keys (this request's own included)."""
    row = ctx.store.revoke_api_key(tenant_id, key_id, by="tenant")
    forget_cached_keys(request)
    return key_json(row)
