"""The provider network end to end on the CPU cluster: KYC gates, join tokens, export control,
billing exactly once, budgets, drains, a spoofed GPU claim caught by the checker, the audit log."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest

from runner import local
from runner.client import Client
from runner.core import ledger
from runner.core.agent_wire import NodeKeys
from runner.core.errors import AuthError, PolicyError
from runner.settings import Settings
from tests.conftest import docker_client_or_skip, ensure_provider, extra_node, wait_for
from tests.integration.test_workloads import smoke
from tests.support.inprocess_api import machine_csr

pytestmark = pytest.mark.cluster


def tenant_client(
    settings: Settings,
    operator: Any,
    name: str,
    *,
    country: str,
    kyc: str = "verified",
    budget_usd: float | None = None,
) -> Client:
    """A tenant of its own (so tests never change `local`), with its own API key."""
    if name not in {t["id"] for t in operator.admin("GET", "/tenants")}:
        operator.admin("POST", "/tenants", id=name, country=country, kyc=kyc, budget_usd=budget_usd)
    return Client(
        settings.server_url, operator.admin("POST", f"/tenants/{name}/keys")["api_key"], ca=settings.server_ca
    )


def engine_run_s(replica_key: str, *, since: float) -> float:
    """How long the replica's container ran, from the engine's own start and die events (the
    container may be removed by now; its events stay)."""
    docker = docker_client_or_skip()
    stamps: dict[str, float] = {}
    events = docker.events(
        since=int(since) - 1, until=int(time.time()) + 1, decode=True, filters={"label": f"runner.key={replica_key}"}
    )
    for event in events:
        if event.get("Type") == "container" and event.get("Action") in ("start", "die"):
            stamps.setdefault(event["Action"], event["timeNano"] / 1e9)
    assert set(stamps) == {"start", "die"}, stamps
    return stamps["die"] - stamps["start"]


def seconds_charged(amount: int, *, price_per_hour: int, milli_units: int) -> int:
    """The seconds a usage amount pays for (the ledger's formula, inverted by search)."""
    seconds = next(s for s in range(100_000) if ledger.cumulative_charge(price_per_hour, milli_units, s) >= amount)
    assert ledger.cumulative_charge(price_per_hour, milli_units, seconds) == amount, "not a whole number of seconds"
    return seconds


def test_a_gpu_workload_is_billed_and_its_provider_paid_exactly_once(
    cluster_settings: Settings, client: Any, operator: Any
) -> None:
    spec = smoke(env={"SMOKE_SLEEP": "3"}, resources={"gpu": "H100", "cpu": 0.5, "memory": "1GB"})
    w = client.submit(spec)
    done = client.wait(w["id"], timeout_s=120)
    assert done["state"] == "SUCCEEDED", done["message"]
    rep = client.get(w["id"])["replicas"][0]
    assert rep["node"] == "fra-h100-1" and rep["price_micros"] == 2_500_000 and rep["milli_units"] == 1000
    assert rep["metered_s"] >= 3
    expected = ledger.cumulative_charge(2_500_000, 1000, rep["metered_s"])

    def usage_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [line for line in lines if line["kind"] == "usage" and line["refs"]["replica"] == rep["key"]]

    charged = usage_of(client.bill()["lines"])
    assert -sum(line["amount"] for line in charged) == expected
    # Against the engine's own clock, not the server's: the seconds the bill charges (read back from
    # its amount) are the container's run as Docker recorded it, every started second, once.
    ran_s = engine_run_s(rep["key"], since=done["created_at"])
    billed_s = seconds_charged(-sum(line["amount"] for line in charged), price_per_hour=2_500_000, milli_units=1000)
    assert math.ceil(ran_s) - 1 <= billed_s <= math.ceil(ran_s) + 1, (billed_s, ran_s)
    assert len({line["key"] for line in charged}) == len(charged)  # each second billed once
    earned = usage_of(operator.admin("GET", "/earnings", params={"provider": "nordic-dc"})[0]["lines"])
    assert sum(line["amount"] for line in earned) == expected - ledger.fee_of(expected, 1000)
    # A control-plane restart meters again from the store: nothing is billed twice.
    local.restart_server(cluster_settings)
    again = Client.from_settings(cluster_settings)
    assert -sum(line["amount"] for line in usage_of(again.bill()["lines"])) == expected


def test_unverified_tenants_cannot_submit(cluster_settings: Settings, operator: Any) -> None:
    newco = tenant_client(cluster_settings, operator, "newco", country="DE", kyc="pending")
    with pytest.raises(PolicyError, match="KYC is pending"):
        newco.submit(smoke())
    operator.admin("POST", "/tenants/newco", kyc="verified")
    w = newco.submit(smoke())
    assert newco.wait(w["id"], timeout_s=120)["state"] == "SUCCEEDED"
    operator.admin("POST", "/tenants/newco", kyc="rejected")
    with pytest.raises(PolicyError, match="KYC is rejected"):
        newco.submit(smoke())


def test_export_control_keeps_restricted_gpus_from_an_embargoed_tenant(
    cluster_settings: Settings, operator: Any
) -> None:
    tenant = tenant_client(cluster_settings, operator, "teheran-labs", country="IR")
    w = tenant.submit(smoke(resources={"gpu": "H100|A100"}))
    waiting = wait_for(
        lambda: (g := tenant.get(w["id"]))["message"].startswith("no node fits") and g,
        what="the export-control refusal",
    )
    assert waiting["state"] == "PENDING"
    assert "fra-h100-1: export control: H100 is restricted, IR is embargoed" in waiting["message"]
    verdicts = {row["node"]: row["verdict"] for row in tenant.explain(w["id"])["rows"]}
    assert verdicts["nyc-a100-1"] == "export control: A100 is restricted, IR is embargoed"
    tenant.cancel(w["id"])
    fine = tenant.submit(smoke(resources={"gpu": "RTX4090"}))  # an unrestricted part is fine
    assert tenant.wait(fine["id"], timeout_s=120)["state"] == "SUCCEEDED"
    placements = operator.admin("GET", "/audit", params={"kind": "placement", "limit": 10_000})
    assert any(e["payload"]["workload"] == w["id"] and not e["payload"]["placed"] for e in placements)


def test_join_tokens_are_scoped_single_use_and_expire(cluster_settings: Settings, operator: Any) -> None:
    ensure_provider(operator, "tokentest", "DE")
    ensure_provider(operator, "otherco", "DE")
    bench = {"tflops": 0.05, "device": "cpu", "dtype": "float32", "bandwidth_gbs": 1.0, "seconds": 0.1}

    def request(token: str, provider: str = "tokentest", name: str = "tok-1", **extra: Any) -> dict[str, Any]:
        return {
            "token": token,
            "provider": provider,
            "name": name,
            "region": "eu-west",
            "country": "DE",
            "cpus": 1,
            "memory_mb": 1024,
            "benchmark": bench,
            "node_keys": NodeKeys.generate().public().to_dict(),
            "tls_csr": machine_csr(),
            **extra,
        }

    def token(provider: str, **approved: Any) -> str:
        """A token approving the machine ``request`` describes (``approved`` changes it)."""
        facts = {"region": "eu-west", "country": "DE", **approved}
        return str(operator.admin("POST", "/tokens", provider=provider, **facts)["token"])

    joiner = Client(cluster_settings.server_url, "", ca=cluster_settings.server_ca)
    other = token("otherco")
    with pytest.raises(AuthError, match="another provider"):
        joiner.join(request(other))
    expired = token("tokentest", ttl_s=0.001)
    with pytest.raises(AuthError, match="expired"):
        joiner.join(request(expired))
    with pytest.raises(AuthError, match="unknown join token"):
        joiner.join(request("jt_forged"))
    good = token("tokentest")
    grant = joiner.join(request(good))
    assert grant["state"] == "verified" and grant["labels"]["provider"] == "tokentest"
    with pytest.raises(AuthError, match="already used"):
        joiner.join(request(good, name="tok-2"))
    # A restricted GPU inside an embargoed country is refused at onboarding, and the refusal audited.
    ensure_provider(operator, "embargoed-dc", "RU")
    # (the operator approved the machine as it is: export control refuses it all the same)
    approved_h100 = token("embargoed-dc", country="RU", gpu_model="H100", gpu_count=1, simulated=True)
    with pytest.raises(PolicyError, match="export control: H100 is a restricted GPU"):
        joiner.join(
            request(
                approved_h100,
                provider="embargoed-dc",
                name="msk-h100",
                country="RU",
                gpu_model="H100",
                gpu_count=1,
                simulated=True,
            )
        )
    refused = operator.admin("GET", "/audit", params={"kind": "node.refused", "limit": 10_000})
    assert any(e["payload"]["node"] == "msk-h100" for e in refused)
    operator.admin("POST", "/nodes/tok-1/offboard")  # registered but never ran a Ray node


def test_a_pending_workload_is_placed_when_a_fitting_node_joins(
    cluster_settings: Settings, client: Any, operator: Any
) -> None:
    w = client.submit(smoke(resources={"gpu": "T4", "cpu": 0.5}))
    wait_for(lambda: client.get(w["id"])["message"].startswith("no node fits"), what="the T4 workload to wait")
    with extra_node(
        cluster_settings,
        operator,
        index=10,
        name="t4-late",
        provider="late-gpus",
        region="eu-west",
        country="FR",
        gpu_model="T4",
        gpu_count=1,
    ):
        done = client.wait(w["id"], timeout_s=180)
        assert done["state"] == "SUCCEEDED" and done["node"] == "t4-late"
        operator.admin("POST", "/nodes/t4-late/offboard")


def test_draining_moves_work_to_another_node_without_a_penalty(
    cluster_settings: Settings, client: Any, operator: Any
) -> None:
    with (
        extra_node(
            cluster_settings, operator, index=11, name="drain-a", provider="drainco", region="test-drain", country="DE"
        ),
        extra_node(
            cluster_settings, operator, index=12, name="drain-b", provider="drainco", region="test-drain", country="DE"
        ),
    ):
        wait_for(
            lambda: {n["name"]: n["state"] for n in client.nodes()}.get("drain-b") == "active",
            timeout_s=60,
            what="both drain nodes to be active",
        )
        stake = operator.admin("GET", "/earnings", params={"provider": "drainco"})[0]["totals"]["stake"]
        w = client.submit(smoke(env={"SMOKE_SLEEP": "300"}, placement={"regions": ["test-drain"]}))
        first = client.wait(w["id"], until="running", timeout_s=120)["node"]
        operator.admin("POST", f"/nodes/{first}/drain")
        moved = wait_for(
            lambda: (g := client.get(w["id"]))["state"] == "RUNNING" and g["node"] != first and g,
            timeout_s=120,
            what="the work to move off the draining node",
        )
        assert moved["relocations"] == 1 and moved["attempts"] == 2
        assert any(f"move off draining node {first}" in e["message"] for e in moved["events"])
        wait_for(
            lambda: {n["name"]: n["state"] for n in client.nodes()}[first] == "offboarded",
            what="the drained node to be offboarded",
        )
        assert operator.admin("GET", "/earnings", params={"provider": "drainco"})[0]["totals"]["stake"] == stake
        client.cancel(w["id"])
        assert client.wait(w["id"], timeout_s=60)["state"] == "CANCELLED"
        operator.admin("POST", f"/nodes/{moved['node']}/offboard")


def test_a_budget_refuses_what_it_cannot_pay_and_stops_running_work(cluster_settings: Settings, operator: Any) -> None:
    thrifty = tenant_client(cluster_settings, operator, "thrifty", country="DE", budget_usd=0.002)
    with pytest.raises(PolicyError, match="may cost up to"):  # 1 H100 for an hour: 2.50 USD
        thrifty.submit(smoke(resources={"gpu": "H100"}, timeout="1h"))
    with pytest.raises(PolicyError, match="no timeout: the network's horizon"):  # estimated for an hour too
        thrifty.submit(smoke(resources={"gpu": "H100"}, env={"SMOKE_SLEEP": "300"}))
    # Admitted under a budget that covers its hour, the budget is then cut to 0.002 USD (~3 s of an
    # H100) while it runs: metering, not admission, stops it.
    operator.admin("POST", "/tenants/thrifty", budget_usd=10)
    w = thrifty.submit(smoke(resources={"gpu": "H100"}, env={"SMOKE_SLEEP": "300"}))
    thrifty.wait(w["id"], until="running", timeout_s=120)
    operator.admin("POST", "/tenants/thrifty", budget_usd=0.002)
    done = thrifty.wait(w["id"], timeout_s=120)
    assert done["state"] == "FAILED" and "budget exhausted" in done["message"]
    bill = thrifty.bill()
    assert bill["totals"]["budget_left"] <= 0
    with pytest.raises(PolicyError, match="budget exhausted"):
        thrifty.submit(smoke())


def test_a_spoofed_gpu_claim_fails_its_challenge_and_the_node_is_suspended(
    cluster_settings: Settings, client: Any, operator: Any
) -> None:
    forged = {"tflops": 400.0, "bandwidth_gbs": 3000.0, "device": "cuda", "dtype": "float16", "seconds": 0.5}
    with extra_node(
        cluster_settings,
        operator,
        index=13,
        name="fake-h100",
        provider="spoofco",
        region="eu-west",
        country="DE",
        gpu_model="H100",
        gpu_count=1,
        benchmark=forged,
    ):
        wait_for(
            lambda: {n["name"]: n["state"] for n in client.nodes()}.get("fake-h100") == "active",
            timeout_s=60,
            what="the spoofing node to be active",
        )
        first = operator.admin("POST", "/nodes/fake-h100/challenge")
        assert not first["ok"] and "expected at least 25% of 400" in first["message"]
        second = operator.admin("POST", "/nodes/fake-h100/challenge")
        assert not second["ok"] and second["failures"] == 2
        node = next(n for n in client.nodes() if n["name"] == "fake-h100")
        assert node["state"] == "suspended"
        earnings = operator.admin("GET", "/earnings", params={"provider": "spoofco"})[0]
        assert earnings["totals"]["slashed"] == 20_000_000
        # An honest node passes the same challenge against its own verified benchmark.
        assert operator.admin("POST", "/nodes/ams-4090-1/challenge")["ok"]
        operator.admin("POST", "/nodes/fake-h100/offboard")


def test_the_audit_log_verifies_through_the_cli(cluster_settings: Settings) -> None:
    from tests.integration.test_cli import run

    result = run(["admin", "audit", "verify"], cluster_settings)
    assert result.returncode == 0 and "hash chain intact" in result.stdout
    listed = json.loads(
        run(["admin", "audit", "ls", "--json", "--kind", "node.state", "--limit", "1000"], cluster_settings).stdout
    )
    assert any(e["payload"]["node"] == "fra-h100-1" and e["payload"]["to"] == "active" for e in listed)


def test_the_checker_records_uptime_per_day_against_the_sla(cluster_settings: Settings, operator: Any) -> None:
    from tests.integration.test_cli import run

    data = wait_for(
        lambda: (u := operator.admin("GET", "/nodes/fra-h100-1/uptime"))["days"] and u,
        timeout_s=30,
        what="a heartbeat round",
    )
    today = data["days"][-1]
    assert today["observed_s"] > 0 and 0 < today["online_s"] <= today["observed_s"]
    assert data["monthly_uptime"] is not None and data["sla"]["monthly_uptime"] == 0.99
    result = run(["node", "uptime", "fra-h100-1"], cluster_settings)
    assert result.returncode == 0 and "over the last 30 days" in result.stdout


def test_a_spec_cannot_name_host_folders_outside_its_tenants_artifact_store(
    cluster_settings: Settings, client: Any
) -> None:
    """Nodes bind-mount file:// checkpoint folders into containers: /etc must never be one."""
    spec = {
        "name": "sneaky",
        "kind": "training",
        "image": "runner/training:latest",
        "checkpoint": {"uri": "file:///etc"},
    }
    with pytest.raises(PolicyError, match="checkpoint.uri: file:///etc is outside the artifact store"):
        client.submit(spec)
    other = (cluster_settings.artifacts_dir / "another-tenant").as_uri()
    with pytest.raises(PolicyError, match="outside the artifact store"):
        client.submit({**spec, "checkpoint": {"uri": other}})
    sneaky = (cluster_settings.artifacts_dir / "local" / ".." / "another-tenant").as_uri()
    with pytest.raises(PolicyError, match="outside the artifact store"):
        client.submit({**spec, "checkpoint": {"uri": sneaky}})
