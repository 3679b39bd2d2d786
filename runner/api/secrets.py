"""A tenant's secrets: set, list (names only), remove (``runner secrets``).

A value goes in once and never comes back out of the API: it is sealed (``runner.secret_box``)
before it is stored, listed by name and date only, and opened only into a start command for the
node that runs a workload whose spec names it (``secrets: {VAR: name}``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path

from runner.api import schemas
from runner.api.auth import Tenant
from runner.api.workloads import Ctx
from runner.core.spec.fields import SECRET_NAME
from runner.store import TenantSecret

router = APIRouter()
#: The largest secret value (a key, a token, a certificate): 64 KiB.
MAX_SECRET_BYTES = 64 * 1024
Name = Annotated[str, Path(pattern=SECRET_NAME.pattern)]


def secret_json(row: TenantSecret) -> dict[str, Any]:
    return {"name": row.name, "updated_at": row.updated_at}


@router.put("/v1/secrets/{name}", response_model=schemas.SecretInfo)
def set_secret(
    tenant_id: Tenant, ctx: Ctx, name: Name, value: Annotated[str, Body(embed=True, max_length=MAX_SECRET_BYTES)]
) -> dict[str, Any]:
    """Set (or replace) a secret; workloads submitted from now on get the new value."""
    sealed = ctx.supervisor.secret_box.seal(value)
    return secret_json(ctx.store.put_secret(tenant_id, name, sealed))


@router.get("/v1/secrets", response_model=list[schemas.SecretInfo])
def list_secrets(tenant_id: Tenant, ctx: Ctx) -> list[dict[str, Any]]:
    """The tenant's secrets by name (never their values)."""
    return [secret_json(row) for row in ctx.store.secrets_of(tenant_id)]


@router.delete("/v1/secrets/{name}", response_model=schemas.SecretInfo)
def delete_secret(tenant_id: Tenant, ctx: Ctx, name: Name) -> dict[str, Any]:
    """Remove a secret: a workload naming it is refused from now on."""
    rows = {row.name: row for row in ctx.store.secrets_of(tenant_id)}
    ctx.store.delete_secret(tenant_id, name)
    return secret_json(rows[name])
