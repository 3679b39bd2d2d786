"""Who is calling: every route depends on one of these, so there is no open route.

``Authorization: Bearer <key>``: a tenant's key for tenant routes, the operator's key for
``/v1/admin`` routes. Keys are looked up by their hash once and cached for the process; a route
that changes who may do what (a key revoked or rotated, a tenant's KYC) drops the cache
(``forget_cached_keys``), so the change holds from the next request on.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from runner.core.errors import AuthError
from runner.store import Principal


def principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    if not authorization or not authorization.startswith("Bearer "):
        raise AuthError("missing API key. To fix: send 'Authorization: Bearer <key>' ($RUNNER_HOME/api-key)")
    key = authorization.removeprefix("Bearer ").strip()
    cache: dict[str, Principal] = request.app.state.key_cache
    if key not in cache:
        cache[key] = request.app.state.store.principal_for_key(key)
    return cache[key]


def forget_cached_keys(request: Request) -> None:
    """Forget every cached key: the next request with each is looked up again."""
    request.app.state.key_cache.clear()


def tenant(who: Annotated[Principal, Depends(principal)]) -> str:
    if who.tenant_id is None:
        raise AuthError("this route is for tenants: use a tenant's API key ($RUNNER_HOME/api-key)")
    return who.tenant_id


def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.operator:
        raise AuthError("this route is for the network's operator: use the operator key ($RUNNER_HOME/admin-key)")
    return who


Tenant = Annotated[str, Depends(tenant)]
Operator = Annotated[Principal, Depends(operator)]
Anyone = Annotated[Principal, Depends(principal)]
