"""Tenant isolation and authentication over real HTTP on the session cluster, as attacks.

Each test is an attack that fails if the attack works. The routes attacked are read from the
FastAPI app's own route table (``runner.api.create_app``), so a route added later is attacked too:

- no credential (and a forged one) on every route: refused with 401 ``AuthError`` ("there is no
  open route", ``runner/api/__init__.py``); the join route takes a join token in its body instead;
- a tenant's key on every operator route (every ``/v1/admin`` route and any other route that
  depends on ``auth.operator``): 401, and nothing it asked for happened;
- tenant B on each of tenant A's workloads, sessions and services (every tenant route with a
  ``{workload_id}``): the same 404 ``NotFoundError`` as for an id that never existed (so B cannot
  even confirm an id), A's things missing from B's lists and bill, and A's work unaffected.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from runner.api import auth
from runner.client import Client
from runner.settings import Settings
from tests.conftest import wait_for
from tests.integration.test_market import tenant_client
from tests.integration.test_workloads import smoke

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
NEVER_EXISTED = "w-00000000ff"


# -- the route table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    path: str  # as the app serves it (with the prefixes it was included under)
    methods: tuple[str, ...]  # HEAD left out
    calls: frozenset[Any]  # every callable it depends on, however deep (its router's too)
    api: bool  # a FastAPI route (not one of Starlette's own, such as the OpenAPI pages)


def _flat(routes: list[Any], prefix: str = "", inherited: frozenset[Any] = frozenset()) -> Iterator[Route]:
    for r in routes:
        original = getattr(r, "original_router", None)  # FastAPI >= 0.120 keeps included routers whole
        if original is not None:
            ctx = r.include_context
            yield from _flat(
                list(original.routes), prefix + (ctx.prefix or ""), inherited | {d.dependency for d in ctx.dependencies}
            )
            continue
        dependant = getattr(r, "dependant", None)
        calls: set[Any] = set(inherited)
        stack = list(dependant.dependencies) if dependant is not None else []
        while stack:
            dep = stack.pop()
            calls.add(dep.call)
            stack.extend(dep.dependencies)
        if calls & {auth.tenant, auth.operator}:
            calls.add(auth.principal)
        yield Route(
            prefix + r.path,
            tuple(sorted(m for m in (getattr(r, "methods", None) or {"GET"}) if m != "HEAD")),
            frozenset(calls),
            dependant is not None,
        )


def app_routes() -> list[Route]:
    """Every route of the real app (its context is not needed to list them)."""
    from types import SimpleNamespace

    from runner.api import create_app
    from runner.core.network import default_network

    bare = SimpleNamespace(store=None, config=default_network())  # (the limits are read at creation)
    return list(_flat(list(create_app(bare).routes)))  # type: ignore[arg-type]


def api_routes() -> list[Route]:
    return [r for r in app_routes() if r.api]


def fill(path: str, **values: str) -> str:
    """A route's path with its parameters filled in (``{key:path}`` too)."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "x"), path)


def call(settings: Settings, key: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.request(
        method, settings.server_url + path, headers=headers, timeout=30, verify=settings.server_verify, **kwargs
    )


def refusal(response: httpx.Response) -> tuple[int, str]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body.get("error", "") if isinstance(body, dict) else ""


JOIN_PATH = "/v1/nodes/join"
#: What anyone may read: the network's CA certificate (public, and checked against a pin).
CA_PATH = "/v1/ca"


def test_the_route_table_is_what_these_attacks_cover() -> None:
    """Every API route either requires a key (depends on ``auth.principal``) or is the join
    route (or the network's CA, public); every ``/v1/admin`` route requires the operator's. A new route that forgets its
    dependency fails here, and the attacks below pick it up by themselves."""
    routes = api_routes()
    assert len(routes) > 30, "the route table was not read"
    open_routes = [r.path for r in routes if auth.principal not in r.calls and r.path not in (JOIN_PATH, CA_PATH)]
    assert open_routes == [], f"routes with no credential: {open_routes}"
    not_operator = [r.path for r in routes if r.path.startswith("/v1/admin") and auth.operator not in r.calls]
    assert not_operator == [], f"admin routes a tenant's key may call: {not_operator}"


# -- no credential ----------------------------------------------------------------------------------
def test_every_route_refuses_a_request_without_a_key_or_with_a_forged_one(cluster_settings: Settings) -> None:
    answered: list[str] = []
    for route in app_routes():
        for method in route.methods:
            path = fill(route.path)
            for key in (None, "rk_forged-" + uuid.uuid4().hex):
                r = call(cluster_settings, key, method, path, json={})
                what = f"{method} {route.path} ({'no key' if key is None else 'forged key'})"
                if route.path == JOIN_PATH:  # its credential is a join token in the body: none given
                    assert r.status_code in (401, 422), f"{what}: {r.status_code} {r.text[:200]}"
                    continue
                if route.path == CA_PATH:  # public: the CA certificate, and nothing else
                    assert r.status_code == 200 and r.text.startswith("-----BEGIN CERTIFICATE-----\n"), what
                    assert r.text.count("-----BEGIN") == 1 and "PRIVATE" not in r.text, f"{what}: {r.text[:200]}"
                    continue
                assert refusal(r) == (401, "AuthError"), f"{what} was not refused: {r.status_code} {r.text[:200]}"
                answered.append(what)
    assert len(answered) >= 2 * len(api_routes()) - 4
    # The app's own pages (the OpenAPI schema and its viewers) are routes too: none is open.
    for page in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        r = call(cluster_settings, None, "GET", page)
        assert r.status_code in (401, 404), f"GET {page} answers without a key: {r.status_code}"


# -- a tenant's key on the operator's routes ----------------------------------------------------------
def test_a_tenants_key_is_refused_on_every_operator_route(cluster_settings: Settings, operator: Any) -> None:
    mallory = tenant_client(cluster_settings, operator, "mallory", country="DE", budget_usd=1.0)
    key = mallory._http.headers["Authorization"].removeprefix("Bearer ")
    before_tenant = next(t for t in operator.admin("GET", "/tenants") if t["id"] == "mallory")
    before_stake = {p["id"]: p["stake_micros"] for p in operator.admin("GET", "/providers")}
    before_nodes = {n["name"]: n["state"] for n in mallory.nodes()}
    tokens_before = len(operator.admin("GET", "/audit", params={"kind": "token.issue", "limit": 10_000}))
    keys_before = len(operator.admin("GET", "/audit", params={"kind": "tenant.key", "limit": 10_000}))
    # What an attacker would ask each route for: verify itself, lift its budget, a key for
    # another tenant, a provider of its own with stake, a join token, a node offboarded.
    attacks: dict[tuple[str, str], tuple[dict[str, str], dict[str, Any]]] = {
        ("POST", "/v1/admin/tenants"): ({}, {"id": "mallory-shell", "country": "DE", "kyc": "verified"}),
        ("POST", "/v1/admin/tenants/{tenant_id}"): (
            {"tenant_id": "mallory"},
            {"kyc": "verified", "clear_budget": True},
        ),
        ("POST", "/v1/admin/tenants/{tenant_id}/keys"): ({"tenant_id": "local"}, {}),
        ("POST", "/v1/admin/providers"): ({}, {"id": "mallory-dc", "country": "DE", "kyc": "verified", "stake_usd": 1}),
        ("POST", "/v1/admin/providers/{provider_id}/kyc"): ({"provider_id": "nordic-dc"}, {"kyc": "rejected"}),
        ("POST", "/v1/admin/providers/{provider_id}/stake"): ({"provider_id": "nordic-dc"}, {"usd": 5, "key": "m"}),
        ("POST", "/v1/admin/tokens"): ({}, {"provider": "nordic-dc", "region": "eu-west", "country": "DE"}),
    }
    operator_routes = [r for r in api_routes() if auth.operator in r.calls]
    assert {r.path for r in operator_routes} >= {"/v1/admin/tenants", "/v1/admin/audit/verify", "/v1/gateway/routes"}
    tried = 0
    for route in operator_routes:
        for method in route.methods:
            params, body = attacks.get((method, route.path), ({"name": "tyo-4090-1", "tenant_id": "local"}, {}))
            r = call(cluster_settings, key, method, fill(route.path, **params), json=body)
            assert refusal(r) == (401, "AuthError"), (
                f"{method} {route.path} with a tenant's key: {r.status_code} {r.text[:300]}"
            )
            assert "operator" in r.json()["message"]
            tried += 1
    assert tried == sum(len(r.methods) for r in operator_routes)
    # Nothing it asked for happened.
    tenants = {t["id"]: t for t in operator.admin("GET", "/tenants")}
    assert "mallory-shell" not in tenants
    assert tenants["mallory"]["kyc"] == before_tenant["kyc"] and tenants["mallory"]["budget_micros"] == 1_000_000
    providers = {p["id"]: p for p in operator.admin("GET", "/providers")}
    assert "mallory-dc" not in providers and providers["nordic-dc"]["kyc"] == "verified"
    assert {pid: p["stake_micros"] for pid, p in providers.items()} == before_stake
    assert len(operator.admin("GET", "/audit", params={"kind": "token.issue", "limit": 10_000})) == tokens_before
    assert len(operator.admin("GET", "/audit", params={"kind": "tenant.key", "limit": 10_000})) == keys_before
    after_nodes = {n["name"]: n["state"] for n in mallory.nodes()}
    assert after_nodes.get("tyo-4090-1") == before_nodes.get("tyo-4090-1") == "active"


# -- tenant B against tenant A's things ---------------------------------------------------------------
def _example(file: str, **changes: Any) -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "examples" / file).read_text())
    spec.update(changes)
    return spec


@pytest.fixture()
def tenant_a_things(cluster_settings: Settings, operator: Any) -> Iterator[tuple[Client, dict[str, str]]]:
    """Tenant A with a running batch job, a session and a service (the last two wait for a node
    that will never come: placement in country ZZ), all cancelled at the end."""
    alice = tenant_client(cluster_settings, operator, "alice-co", country="DE")
    nowhere = {"countries": ["ZZ"]}
    job = alice.submit(smoke(env={"SMOKE_SLEEP": "600"}, timeout="15m"))
    session = alice.submit(_example("gaming.yaml", name="alice-game", placement=nowhere))
    service = alice.submit(
        _example("inference.yaml", name="alice-embed", placement=nowhere, replicas={"min": 1, "max": 1})
    )
    ids = {"job": job["id"], "session": session["id"], "service": service["id"]}
    try:
        yield alice, ids
    finally:
        for wid in ids.values():
            alice.cancel(wid)
        for wid in ids.values():
            assert alice.wait(wid, timeout_s=120)["state"] == "CANCELLED"


def test_tenant_b_cannot_see_touch_or_confirm_tenant_as_work(
    cluster_settings: Settings, operator: Any, tenant_a_things: tuple[Client, dict[str, str]]
) -> None:
    alice, ids = tenant_a_things
    bob = tenant_client(cluster_settings, operator, "bob-co", country="DE")
    bob_key = bob._http.headers["Authorization"].removeprefix("Bearer ")
    alice.wait(ids["job"], until="running", timeout_s=180)
    # A's job is billed as it runs: wait for a usage line, so B's bill has something to leak.
    wait_for(
        lambda: any(
            line["kind"] == "usage" and line["refs"].get("workload") == ids["job"] for line in alice.bill()["lines"]
        ),
        timeout_s=60,
        what="tenant A's first usage line",
    )

    def id_for(path: str) -> str:
        return (
            ids["session"]
            if path.startswith("/v1/sessions")
            else ids["service"]
            if path.startswith("/v1/services")
            else ids["job"]
        )

    tenant_routes = [r for r in api_routes() if auth.tenant in r.calls and "{workload_id}" in r.path]
    assert {r.path for r in tenant_routes} >= {
        "/v1/workloads/{workload_id}",
        "/v1/workloads/{workload_id}/logs",
        "/v1/workloads/{workload_id}/cancel",
        "/v1/workloads/{workload_id}/artifacts",
        "/v1/sessions/{workload_id}/end",
        "/v1/services/{workload_id}",
    }
    for route in tenant_routes:
        for method in route.methods:
            params = {"timeout": 0} if route.path.endswith("/wait") else {}
            theirs = call(
                cluster_settings,
                bob_key,
                method,
                fill(route.path, workload_id=id_for(route.path)),
                params=params,
                json={},
            )
            none = call(
                cluster_settings, bob_key, method, fill(route.path, workload_id=NEVER_EXISTED), params=params, json={}
            )
            what = f"{method} {route.path} by tenant B on tenant A's {id_for(route.path)}"
            assert refusal(theirs) == (404, "NotFoundError"), f"{what}: {theirs.status_code} {theirs.text[:300]}"
            assert refusal(none) == refusal(theirs), f"{what}: answered unlike an id that never existed"
            assert theirs.json()["message"] == none.json()["message"].replace(NEVER_EXISTED, id_for(route.path))
            assert "alice-co" not in theirs.text
            # And A itself is answered on the very same route (so the 404 is B's, not the route's).
            own = (
                call(
                    cluster_settings,
                    alice._http.headers["Authorization"].removeprefix("Bearer "),
                    "GET",
                    fill(route.path, workload_id=id_for(route.path)),
                    params=params,
                )
                if method == "GET"
                else None
            )
            if own is not None and not route.path.endswith("/artifacts") and "{key" not in route.path:
                assert own.status_code == 200, f"tenant A on {route.path}: {own.status_code} {own.text[:300]}"
    # B's lists and bill hold nothing of A's.
    mine = set(ids.values())
    assert mine.isdisjoint(w["id"] for w in bob.list(limit=1000))
    assert mine.isdisjoint(s["id"] for s in bob.sessions(all=True, limit=1000))
    assert mine.isdisjoint(s["id"] for s in bob.services(all=True, limit=1000))
    bill = bob.bill()
    assert bill["tenant"] == "bob-co"
    assert not [
        line
        for line in bill["lines"]
        if line["refs"].get("workload") in mine or line["refs"].get("tenant") not in (None, "bob-co")
    ], json.dumps(bill)[:500]
    # B cannot read A's bill through the operator's route either.
    assert refusal(call(cluster_settings, bob_key, "GET", "/v1/admin/bills", params={"tenant": "alice-co"})) == (
        401,
        "AuthError",
    )
    # A's work is unaffected by B's cancel and end: still running / still waiting, nothing requested.
    job = alice.get(ids["job"])
    assert job["state"] == "RUNNING" and not job["cancel_requested"] and not job["stop_reason"]
    assert not [e for e in job["events"] if "cancel" in e["message"] or "end requested" in e["message"]]
    for wid in (ids["session"], ids["service"]):
        w = alice.get(wid)
        assert w["state"] == "PENDING" and not w["cancel_requested"] and not w["stop_reason"], w
        assert not [e for e in w["events"] if "requested" in e["message"]]
    assert {w["id"] for w in alice.list(limit=1000)} >= mine
    assert ids["session"] in {s["id"] for s in alice.sessions()}
    assert ids["service"] in {s["id"] for s in alice.services()}
