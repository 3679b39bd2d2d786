"""The API is typed: every route declares its answer, the OpenAPI schema describes every answer, and
the real answers are what their models say, to the key and to the type.

A route's ``response_model`` filters its answer: a key the model lacks is dropped without a word.
So besides validating answers over HTTP, the dicts the routes build (``workload_json``, the
session view, the endpoints' own dicts) are checked to survive their model unchanged: same keys,
same values, an int still an int. Served by the real API (``create_app``) over a real SQLite
store, with a stand-in for the supervisor (``tests/support/inprocess_api.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_type_hints

import pytest
from fastapi import FastAPI
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from runner import client as client_module
from runner import onboarding
from runner.api import admin, nodes, schemas, sessions, workloads
from runner.api.encoding import finite
from runner.artifacts import listing as listing_of
from runner.artifacts import workload_store
from runner.client import Client
from runner.core import ledger
from runner.core.agent_wire import NodeKeys
from runner.core.approval import ApprovedMachine
from runner.core.events import EventKind
from runner.core.policy import KYC
from runner.core.services import service_view
from runner.core.sessions import session_spec
from runner.core.sla import utc_day
from runner.core.spec import parse_workload, spec_to_dict
from runner.ray_nodes import RayNode
from runner.store import Store
from tests.support.inprocess_api import LOOPBACK_PEER, StubSupervisor, machine_csr, make_app

CPU_MACHINE = ApprovedMachine(region="eu-west", country="NL")  # what a token approves here

BENCH = {"tflops": 0.05, "device": "cpu", "dtype": "float32", "bandwidth_gbs": 1.0, "seconds": 0.1}


# -- the route table ---------------------------------------------------------------------------------
def api_routes(app: Any) -> list[tuple[str, APIRoute]]:
    """Every FastAPI route of the app with the path it is served at (included routers kept whole)."""
    out: list[tuple[str, APIRoute]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for r in routes:
            original = getattr(r, "original_router", None)  # FastAPI >= 0.120 keeps included routers whole
            if original is not None:
                walk(list(original.routes), prefix + (r.include_context.prefix or ""))
            elif isinstance(r, APIRoute):
                out.append((prefix + r.path, r))

    walk(list(app.routes), "")
    return out


def declares_its_answer(route: APIRoute) -> bool:
    """A response model, or an explicit response class (a stream, a file) with the 2xx media type named."""
    if route.response_model is not None:
        return True
    explicit = not isinstance(route.response_class, DefaultPlaceholder)
    return explicit and any(str(code).startswith("2") and r.get("content") for code, r in route.responses.items())


@pytest.fixture(scope="module")
def bare_app() -> Any:
    return make_app(SimpleNamespace())  # type: ignore[arg-type]  # listing routes needs no store


def test_every_route_declares_its_answer(bare_app: Any) -> None:
    routes = api_routes(bare_app)
    assert len(routes) > 40, f"the route table was not read: {len(routes)} routes"
    undeclared = [f"{sorted(r.methods)} {path}" for path, r in routes if not declares_its_answer(r)]
    assert undeclared == [], f"routes without a response_model or a declared non-JSON answer: {undeclared}"


def test_the_openapi_schema_describes_every_answer(bare_app: Any) -> None:
    doc = bare_app.openapi()
    components = doc["components"]["schemas"]
    operations = [(m.upper(), p, op) for p, ops in doc["paths"].items() for m, op in ops.items()]
    in_schema = [(p, r) for p, r in api_routes(bare_app) if r.include_in_schema]
    assert len(operations) == sum(len(r.methods) for _, r in in_schema), "an operation is missing from the schema"
    problems = []
    for method, path, op in operations:
        answers = [
            media.get("schema", {})
            for code, response in op["responses"].items()
            if code.startswith("2")
            for media in response.get("content", {}).values()
        ]
        if not answers or not all("$ref" in s or "type" in s for s in answers):
            problems.append(f"{method} {path}: {answers}")
        for code, response in op["responses"].items():
            for media in response.get("content", {}).values():
                ref = media.get("schema", {}).get("$ref", "")
                if ref and ref.removeprefix("#/components/schemas/") not in components:
                    problems.append(f"{method} {path} {code}: {ref} is not in the components")
                if code == "422" and ref.endswith("/HTTPValidationError"):  # not the shape the API answers
                    problems.append(f"{method} {path}: 422 is FastAPI's HTTPValidationError, not ErrorAnswer")
    assert problems == [], "\n".join(problems)
    # Every answer model is in the schema, with what it is for.
    for name in ("Workload", "WorkloadDetail", "Session", "Service", "Node", "Bill", "Earnings", "JoinGrant"):
        assert components[name].get("description"), f"{name} has no description"


def _answering(answer: Any) -> Any:
    def endpoint() -> Any:
        return answer

    return endpoint


def test_a_typed_answer_is_checked_and_filtered(bare_app: Any) -> None:
    """The answers are TypedDicts: FastAPI validates one as it would a model, drops the keys it
    lacks, leaves a ``NotRequired`` key out where the route's dict does, and refuses a wrong type."""
    totals = {"charges": 1, "credits": 0, "refunds": 0, "owed": 1}
    bill = {"tenant": "acme", "account": "tenant:acme", "totals": totals, "lines": []}
    answers = {
        "/plain": {**bill, "extra": 1},
        "/budget": {**bill, "totals": {**totals, "budget": 5, "budget_left": None, "extra": 1}},
        "/wrong": {**bill, "totals": {**totals, "owed": "lots"}},
    }
    app = FastAPI()
    for path, answer in answers.items():
        app.get(path, response_model=schemas.Bill)(_answering(answer))
    http = TestClient(app, raise_server_exceptions=False, client=LOOPBACK_PEER)
    assert http.get("/plain").json() == bill
    assert http.get("/budget").json() == {**bill, "totals": {**totals, "budget": 5, "budget_left": None}}
    assert http.get("/wrong").status_code == 500  # FastAPI's ResponseValidationError
    # In the schema: a component per TypedDict, the keys that may be absent not required.
    components = bare_app.openapi()["components"]["schemas"]
    assert components["Bill"]["properties"]["totals"] == {"$ref": "#/components/schemas/TenantTotals"}
    assert components["TenantTotals"]["required"] == ["charges", "credits", "refunds", "owed"]
    assert components["ErrorAnswer"]["required"] == ["error", "message"]
    # The two unions are named components too, with what they are for.
    for name, members in (
        ("Explain", ["PlacementDecided", "PlacementUndecided"]),
        ("Challenge", ["ChallengeResult", "ChallengeUnreachable"]),
    ):
        assert [ref["$ref"].rsplit("/", 1)[1] for ref in components[name]["anyOf"]] == members
        assert components[name]["title"] == name and components[name]["description"]
    # A challenge's outcome is the first type that fits: a result keeps every key, as it should.
    challenge = TypeAdapter(schemas.Challenge)
    result = {"node": "n", "ok": True, "measured_tflops": 1.0, "expected_tflops": 1.0, "failures": 0, "message": ""}
    unreachable = {"node": "n", "ok": False, "message": "node is not reachable"}
    assert challenge.validate_python(result) == result
    assert challenge.validate_python(unreachable) == unreachable


#: The route each client call makes: what the call returns is typed as that route's answer.
CLIENT_CALLS = {
    "health": ("GET", "/v1/health"),
    "submit": ("POST", "/v1/workloads"),
    "list": ("GET", "/v1/workloads"),
    "get": ("GET", "/v1/workloads/{workload_id}"),
    "cancel": ("POST", "/v1/workloads/{workload_id}/cancel"),
    "wait": ("GET", "/v1/workloads/{workload_id}/wait"),
    "explain": ("GET", "/v1/workloads/{workload_id}/explain"),
    "artifacts": ("GET", "/v1/workloads/{workload_id}/artifacts"),
    "nodes": ("GET", "/v1/nodes"),
    "join": ("POST", "/v1/nodes/join"),
    "bill": ("GET", "/v1/bill"),
    "session_start": ("POST", "/v1/sessions"),
    "sessions": ("GET", "/v1/sessions"),
    "session": ("GET", "/v1/sessions/{workload_id}"),
    "session_wait": ("GET", "/v1/sessions/{workload_id}/wait"),
    "session_end": ("POST", "/v1/sessions/{workload_id}/end"),
    "services": ("GET", "/v1/services"),
    "service": ("GET", "/v1/services/{workload_id}"),
    "keys": ("GET", "/v1/keys"),
    "new_key": ("POST", "/v1/keys"),
    "rotate_key": ("POST", "/v1/keys/rotate"),
    "revoke_key": ("DELETE", "/v1/keys/{key_id}"),
    "secrets": ("GET", "/v1/secrets"),
    "set_secret": ("PUT", "/v1/secrets/{name}"),
    "delete_secret": ("DELETE", "/v1/secrets/{name}"),
}
#: Public methods that are not one route's JSON answer (``admin`` reaches any operator route).
CLIENT_OTHERS = {"admin", "artifact_get", "close", "from_settings", "logs"}


def test_the_client_returns_the_routes_answer_types(bare_app: Any) -> None:
    routes = {(method, path): r for path, r in api_routes(bare_app) for method in r.methods}
    names = {**vars(client_module), "schemas": schemas}  # the client imports schemas for type checking only

    def returns(method: str) -> Any:
        return get_type_hints(getattr(Client, method), names)["return"]

    assert {m for m in vars(Client) if not m.startswith("_")} - CLIENT_OTHERS == set(CLIENT_CALLS)
    for method, route in CLIENT_CALLS.items():
        assert returns(method) == routes[route].response_model, f"Client.{method}"
    assert returns("logs") == Iterator[schemas.LogLine]
    assert returns("admin") is Any


# -- real answers over a real store ----------------------------------------------------------------
class Network:
    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
        self.supervisor = StubSupervisor()
        self.app = make_app(self.store, self.supervisor)
        self.ctx = self.app.state.ctx
        self.http = TestClient(self.app, raise_server_exceptions=False, client=LOOPBACK_PEER)
        self.op = {"Authorization": f"Bearer {self.store.create_operator_key()}"}

    def call(self, method: str, path: str, model: Any, *, status: int = 200, headers: Any = None, **kw: Any) -> Any:
        """Call a route; its answer must have ``status`` and validate as ``model``."""
        r = self.http.request(method, path, headers=self.op if headers is None else headers, **kw)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text[:300]}"
        body = r.json()
        TypeAdapter(model).validate_python(body)
        return body


def same_after(model: Any, raw: Any) -> None:
    """``raw`` (what a route builds) goes through ``model`` (what FastAPI does to it) unchanged: no
    key dropped or added, no value retyped (an int that became a float reads differently as JSON)."""
    ta = TypeAdapter(model)
    out = ta.dump_json(ta.validate_python(raw))
    assert json.loads(out) == finite(raw)
    assert json.dumps(json.loads(out), sort_keys=True) == json.dumps(finite(raw), sort_keys=True)


@pytest.fixture()
def net(tmp_path: Path) -> Network:
    return Network(tmp_path)


def test_operator_answers_fit_their_models(net: Network) -> None:
    tenant = net.call(
        "POST",
        "/v1/admin/tenants",
        schemas.TenantInfo,
        status=201,
        json={"id": "acme", "country": "DE", "kyc": "verified", "budget_usd": 10},
    )
    assert tenant["budget_micros"] == 10_000_000 and tenant["spent_micros"] == 0
    net.call("POST", "/v1/admin/tenants/acme", schemas.TenantInfo, json={"budget_usd": 20})
    assert [t["id"] for t in net.call("GET", "/v1/admin/tenants", list[schemas.TenantInfo])] == ["acme"]
    key = net.call("POST", "/v1/admin/tenants/acme/keys", schemas.NewApiKey, status=201)["api_key"]
    provider = net.call(
        "POST",
        "/v1/admin/providers",
        schemas.ProviderInfo,
        status=201,
        json={"id": "gpu-barn", "country": "NL", "kyc": "verified", "stake_usd": 100},
    )
    assert provider["stake_micros"] == 100_000_000
    net.call("POST", "/v1/admin/providers/gpu-barn/stake", schemas.ProviderInfo, json={"usd": 5, "key": "k1"})
    net.call("POST", "/v1/admin/providers/gpu-barn/kyc", schemas.ProviderInfo, json={"kyc": "verified"})
    assert net.call("GET", "/v1/admin/providers", list[schemas.ProviderInfo])[0]["stake_micros"] == 105_000_000
    token = net.call(
        "POST",
        "/v1/admin/tokens",
        schemas.NewJoinToken,
        status=201,
        json={
            "provider": "gpu-barn",
            "region": "eu-west",
            "country": "NL",
            "gpu_model": "RTX4090",
            "gpu_count": 1,
            "simulated": True,
        },
    )
    join = {
        "token": token["token"],
        "provider": "gpu-barn",
        "name": "gpu-1",
        "region": "eu-west",
        "country": "NL",
        "cpus": 2,
        "memory_mb": 2048,
        "gpu_model": "RTX4090",
        "gpu_count": 1,
        "simulated": True,
        "benchmark": BENCH,
        "node_keys": NodeKeys.generate().public().to_dict(),
        "tls_csr": machine_csr(),
    }
    grant = net.call("POST", "/v1/nodes/join", schemas.JoinGrant, json=join, headers={})
    assert grant["labels"]["provider"] == "gpu-barn" and grant["num_gpus"] == 1
    # The node's life, as the operator moves it.
    assert net.call("POST", "/v1/admin/nodes/gpu-1/activate", schemas.NodeMove)["state"] == "active"
    assert net.call("POST", "/v1/admin/nodes/gpu-1/drain", schemas.NodeMove)["state"] == "draining"
    net.store.add_check(node="gpu-1", kind="challenge", ok=True, measured=0.05, expected=0.05, message="fine")
    net.store.add_check(node="gpu-1", kind="heartbeat", ok=False, message="no heartbeat")
    checks = net.call("GET", "/v1/admin/nodes/gpu-1/checks", list[schemas.CheckRow])
    assert {c["kind"] for c in checks} == {"challenge", "heartbeat"}
    net.store.add_uptime("gpu-1", utc_day(time.time()), 3600.0, 3000.0)
    uptime = net.call("GET", "/v1/admin/nodes/gpu-1/uptime", schemas.Uptime)
    assert uptime["days"] and uptime["days"][0]["offline_s"] == 600.0
    # Money: a usage charge on the tenant's bill and the provider's earnings.
    tx = ledger.usage(
        replica_key="w-r0-a1",
        tenant="acme",
        provider="gpu-barn",
        node="gpu-1",
        workload_id="w",
        price_per_hour=1_000_000,
        milli_units=1000,
        from_s=0,
        to_s=3600,
        fee_bps=1000,
    )
    assert tx is not None and net.store.post(tx)
    bill = net.call("GET", "/v1/bill", schemas.Bill, headers={"Authorization": f"Bearer {key}"})
    assert bill["totals"]["charges"] == 1_000_000 and bill["totals"]["budget"] == 20_000_000 and bill["lines"]
    assert net.call("GET", "/v1/admin/bills", list[schemas.Bill])[0]["tenant"] == "acme"
    earnings = net.call("GET", "/v1/admin/earnings", list[schemas.Earnings])
    assert earnings[0]["totals"]["stake"] == 105_000_000 and earnings[0]["lines"]
    offboarded = net.call("POST", "/v1/admin/nodes/gpu-1/offboard", schemas.Offboarded)
    assert offboarded == {"node": "gpu-1", "state": "offboarded", "replicas_moved": 0, "slashed_micros": None}
    # The audit chain recorded all of it, and holds.
    entries = net.call("GET", "/v1/admin/audit", list[schemas.AuditEntry], params={"limit": 1000})
    assert {"tenant.key", "token.issue", "node.register"} <= {e["kind"] for e in entries}
    assert net.call("GET", "/v1/admin/audit/verify", schemas.AuditVerify)["ok"] is True
    # Anyone's routes.
    health = net.call("GET", "/v1/health", schemas.Health, headers={"Authorization": f"Bearer {key}"})
    assert health == {"ok": True, "runtime": "process", "nodes": 0}
    assert net.call("GET", "/v1/whoami", schemas.Whoami) == {"tenant": None, "operator": True, "refused": None}
    tenant_whoami = net.call("GET", "/v1/whoami", schemas.Whoami, headers={"Authorization": f"Bearer {key}"})
    assert tenant_whoami == {"tenant": "acme", "operator": False, "refused": None}
    # What the routes build goes through their models unchanged.
    ctx, op = net.ctx, None
    same_after(schemas.TenantInfo, admin.tenant_json(ctx, net.store.get_tenant("acme")))
    same_after(schemas.ProviderInfo, admin.provider_json(ctx, net.store.get_provider("gpu-barn")))
    same_after(schemas.Bill, nodes.bill_json(ctx, "acme"))
    same_after(list[schemas.Earnings], admin.earnings(op, ctx, provider=None))
    same_after(schemas.Uptime, admin.uptime(op, ctx, "gpu-1", days=30))
    same_after(list[schemas.CheckRow], admin.checks(op, ctx, "gpu-1", limit=50))
    same_after(list[schemas.AuditEntry], admin.audit(op, ctx, after=0, limit=1000, kind=None))
    same_after(schemas.AuditVerify, admin.audit_verify(op, ctx))
    same_after(schemas.Health, nodes.health(op, ctx))  # type: ignore[arg-type]
    net.store.add_tenant("nobudget", country="FR", kyc=KYC.VERIFIED)
    plain = nodes.bill_json(ctx, "nobudget")
    assert "budget" not in plain["totals"]
    same_after(schemas.Bill, plain)  # absent keys stay absent (not null)


def test_the_fleet_view_fits_its_model(net: Network) -> None:
    net.store.add_provider("gpu-barn", country="NL", kyc=KYC.VERIFIED)
    token = net.store.issue_join_token("gpu-barn", ttl_s=60, approved=CPU_MACHINE)
    body = {"token": token, "provider": "gpu-barn", "name": "gpu-1", "region": "eu-west", "country": "NL"}
    net.call(
        "POST",
        "/v1/nodes/join",
        schemas.JoinGrant,
        json={
            **body,
            "cpus": 2,
            "memory_mb": 2048,
            "benchmark": BENCH,
            "node_keys": NodeKeys.generate().public().to_dict(),
            "tls_csr": machine_csr(),
        },
        headers={},
    )
    labels = {"node": "gpu-1", "provider": "gpu-barn"}
    net.supervisor.cluster.nodes = {
        "gpu-1": RayNode("gpu-1", "id1", True, labels, {"CPU": 2.0, "memory": 2048}, "10.0.0.1"),
        "ghost": RayNode("ghost", "id2", True, {"node": "ghost"}, {"CPU": 1.0}),
    }
    net.supervisor.placing = SimpleNamespace(rows=lambda: [SimpleNamespace(name="gpu-1", reliability=0.5)])  # type: ignore[attr-defined]
    fleet = net.call("GET", "/v1/nodes", list[schemas.Node])
    assert [(n["name"], n["state"]) for n in fleet] == [("ghost", "unregistered"), ("gpu-1", "verified")]
    assert fleet[1]["resources"] == {"CPU": 2.0, "memory": 2048} and fleet[1]["reliability"] == 0.5
    same_after(list[schemas.Node], nodes.nodes_json(net.ctx))


def test_tenant_answers_fit_their_models(net: Network) -> None:
    net.store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    tenant = {"Authorization": f"Bearer {net.store.create_api_key('acme')}"}
    batch = spec_to_dict(parse_workload({"kind": "batch", "name": "b", "image": "img", "command": ["true"]}))
    w, _ = net.store.create_workload(tenant_id="acme", spec=batch, source="b.yaml")
    other, _ = net.store.create_workload(tenant_id="acme", spec=batch, source="<api>")
    key = f"{w.id}-r0-a1"
    net.store.add_replica(
        key=key, workload_id=w.id, index=0, attempt=1, node="gpu-1", state="STARTING", provider_id="p", milli_units=1000
    )
    net.store.update_replica(key, reports={"metrics": {"loss": float("nan"), "step": 3}}, ports={"8000/tcp": ":1"})
    net.store.add_event(w.id, "PENDING", "submitted", kind=EventKind.STATE)
    net.store.record_placement(
        workload_id=w.id,
        attempt=1,
        placed=True,
        nodes=["gpu-1"],
        message="placed",
        rows=[{"node": "gpu-1", "score": 1.5}],
        total_nodes=1,
    )
    net.store.append_logs(workload_id=w.id, replica_key=key, start_seq=0, lines=["hello", "world"])
    listed = net.call("GET", "/v1/workloads", list[schemas.Workload], headers=tenant)
    assert {x["id"] for x in listed} == {w.id, other.id}
    detail = net.call("GET", f"/v1/workloads/{w.id}", schemas.WorkloadDetail, headers=tenant)
    assert detail["replicas"][0]["reports"]["metrics"] == {"loss": None, "step": 3}  # NaN answers as null
    assert detail["events"][0]["kind"] == "state"
    decided = net.call("GET", f"/v1/workloads/{w.id}/explain", schemas.Explain, headers=tenant)
    assert decided["decided"] is True and decided["rows"] == [{"node": "gpu-1", "score": 1.5}]
    undecided = net.call("GET", f"/v1/workloads/{other.id}/explain", schemas.Explain, headers=tenant)
    assert undecided == {"workload": other.id, "state": "PENDING", "decided": False, "message": "", "rows": []}
    net.call("GET", f"/v1/workloads/{w.id}/wait", schemas.Workload, headers=tenant, params={"timeout": 0})
    cancelled = net.call("POST", f"/v1/workloads/{other.id}/cancel", schemas.Workload, headers=tenant)
    assert cancelled["cancel_requested"] is True and cancelled["stop_kind"] is None
    logs = net.http.get(f"/v1/workloads/{w.id}/logs", headers=tenant)
    assert logs.status_code == 200 and logs.headers["content-type"].startswith("application/x-ndjson")
    lines = [TypeAdapter(schemas.LogLine).validate_json(line) for line in logs.text.splitlines()]
    assert [x["line"] for x in lines] == ["hello", "world"]
    # A gaming session, in its player's shape.
    spec = spec_to_dict(parse_workload(session_spec({"game": "breakout", "near": "eu-west"})))
    s, _ = net.store.create_workload(tenant_id="acme", spec=spec, source="session")
    session = net.call("GET", f"/v1/sessions/{s.id}", schemas.Session, headers=tenant)
    assert session["phase"] == "waiting" and session["sla"] == {"state": "ok", "breaches": 0, "last": ""}
    assert [x["id"] for x in net.call("GET", "/v1/sessions", list[schemas.Session], headers=tenant)] == [s.id]
    # An error, in the shape the schema gives it.
    missing = net.http.get("/v1/workloads/nope", headers=tenant)
    assert missing.status_code == 404
    assert "detail" not in TypeAdapter(schemas.ErrorAnswer).validate_python(missing.json())  # absent, not null
    refused = net.http.get("/v1/workloads", headers=tenant, params={"limit": 0})
    assert refused.status_code == 422 and TypeAdapter(schemas.ErrorAnswer).validate_python(refused.json())["detail"]
    # What the routes build goes through their models unchanged.
    ctx = net.ctx
    for row in (net.store.get_workload(w.id), net.store.get_workload(other.id)):
        same_after(schemas.Workload, workloads.workload_json(row))
    same_after(schemas.Replica, workloads.replica_json(net.store.get_replica(key)))
    same_after(list[schemas.Event], [workloads.event_json(e) for e in net.store.events(w.id)])
    same_after(schemas.WorkloadDetail, workloads.get_workload("acme", ctx, w.id))
    same_after(schemas.Explain, workloads.explain("acme", ctx, w.id))
    same_after(schemas.Explain, workloads.explain("acme", ctx, other.id))
    same_after(schemas.Session, sessions.view(ctx, net.store.get_workload(s.id)))


def test_service_artifact_and_grant_answers_fit_their_models(net: Network, tmp_path: Path) -> None:
    net.store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    spec = parse_workload({"kind": "inference", "name": "svc", "image": "img", "replicas": {"min": 1, "max": 3}})
    w, _ = net.store.create_workload(tenant_id="acme", spec=spec_to_dict(spec), source="svc.yaml")
    now = time.time()
    for index, metrics in ((0, {"requests_per_s": 4, "latency_ms_p50": 12.5, "ts": now}), (1, {})):
        key = f"{w.id}-r{index}-a1"
        net.store.add_replica(key=key, workload_id=w.id, index=index, attempt=1, node="n", state="RUNNING")
        net.store.update_replica(key, reports={"metrics": metrics}, ports={"8000/tcp": "0.0.0.0:30000"})
    net.store.add_event(w.id, "RUNNING", "scaled 1 -> 2", kind=EventKind.SCALED, data={"from": 1, "to": 2})
    row = net.store.get_workload(w.id)
    view = service_view(row, spec, net.store.replicas(w.id), net.store.events(w.id), gateway="http://gw", now=now)
    assert view["requests_per_s"] == 4 and view["replicas"]["desired"] == 2  # an int stays an int
    same_after(schemas.Service, view)
    same_after(schemas.Service, service_view(row, spec, [], [], gateway=None, now=now))
    # A training job's artifacts, as listed from a local store.
    root = tmp_path / "ckpt"
    (root / "step-00000001").mkdir(parents=True)
    (root / "step-00000001" / "weights.bin").write_bytes(b"w")
    (root / "latest.json").write_text(json.dumps({"step": 1}))
    listing = {
        "workload": w.id,
        "state": "RUNNING",
        "final_checkpoint": None,
        **listing_of(workload_store(root.as_uri(), {})),
    }
    assert listing["items"] and listing["latest"] == {"step": 1}
    same_after(schemas.Artifacts, listing)
    # The join grant is onboarding's, field for field.
    assert list(schemas.JoinGrant.__annotations__) == list(onboarding.JoinGrant.model_fields)


def test_the_schema_is_for_the_operator_only(net: Network) -> None:
    net.store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    tenant = {"Authorization": f"Bearer {net.store.create_api_key('acme')}"}
    r = net.http.get("/openapi.json", headers=net.op)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.") and "/v1/workloads" in doc["paths"]
    assert "/openapi.json" not in doc["paths"]
    for headers, what in (
        (tenant, "a tenant's key"),
        ({}, "no key"),
        ({"Authorization": "Bearer rk_forged"}, "forged"),
    ):
        r = net.http.get("/openapi.json", headers=headers)
        assert r.status_code in (401, 404), f"/openapi.json answers {what}: {r.status_code}"
        assert "paths" not in r.text
    # Its viewers stay off for everyone.
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        for headers in (net.op, tenant, {}):
            assert net.http.get(page, headers=headers).status_code in (401, 404), page
