"""Edges of the cluster's lifecycle on the session cluster: a killed gateway started again keeps
its port (``gateway.json``), and a node offboarded with work running costs its provider the
undrained-offboard slash, read from the ledger (the provider's stake) before and after."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest

from runner import cluster, local
from runner.core.ledger import SlashCause
from runner.core.network import default_network
from runner.gateway import address
from runner.gateway.address import gateway_url
from runner.settings import Settings
from tests.conftest import extra_node, wait_for
from tests.integration.test_market import tenant_client
from tests.integration.test_workloads import smoke

pytestmark = pytest.mark.cluster


def _answers(url: str, key: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", headers={"Authorization": f"Bearer {key}"}, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_killed_gateway_started_again_keeps_its_port(cluster_settings: Settings) -> None:
    record = cluster.read_record(cluster_settings.cluster_record_path)
    old_pid = int(record["pids"]["gateway"])
    url = gateway_url(cluster_settings)
    recorded = address.recorded(cluster_settings)
    assert url and recorded and url.endswith(f":{recorded[1]}")
    key = cluster_settings.api_key_path.read_text().strip()
    assert _answers(url, key)
    os.killpg(old_pid, signal.SIGKILL)  # as a crash: it started in a session of its own
    wait_for(lambda: not _answers(url, key), timeout_s=30, what="the killed gateway to stop answering")
    gateway = local.start_gateway(cluster_settings)
    record["pids"]["gateway"] = gateway.pid
    local._write_record(cluster_settings, record)  # so `runner down` stops the new one
    local._wait_for_gateway(cluster_settings, key, gateway, 60)
    assert gateway.pid != old_pid
    assert address.recorded(cluster_settings) == recorded
    assert gateway_url(cluster_settings) == url
    # It is the gateway, back at work: it checks keys with the control plane again.
    forged = httpx.get(f"{url}/s/whatever/v1/models", headers={"Authorization": "Bearer rk_forged"}, timeout=10)
    assert forged.status_code == 401, forged.text


def test_offboarding_a_node_with_running_work_slashes_its_provider(cluster_settings: Settings, operator: Any) -> None:
    amount = default_network().market.slash[SlashCause.UNDRAINED_OFFBOARD]
    tenant = tenant_client(cluster_settings, operator, "hurried-co", country="DE")

    def stake() -> int:
        return next(p for p in operator.admin("GET", "/providers") if p["id"] == "hasty-dc")["stake_micros"]

    with extra_node(
        cluster_settings, operator, index=20, name="hasty-1", provider="hasty-dc", region="test-undrained", country="DE"
    ):
        wait_for(
            lambda: {n["name"]: n["state"] for n in tenant.nodes()}.get("hasty-1") == "active",
            timeout_s=90,
            what="hasty-1 to be active",
        )
        w = tenant.submit(smoke(env={"SMOKE_SLEEP": "300"}, placement={"regions": ["test-undrained"]}))
        running = tenant.wait(w["id"], until="running", timeout_s=120)
        assert running["state"] == "RUNNING" and running["node"] == "hasty-1", running
        before = stake()
        assert before > amount
        answer = operator.admin("POST", "/nodes/hasty-1/offboard")
        assert answer["replicas_moved"] == 1
        assert stake() == before - amount
        operator.admin("POST", "/nodes/hasty-1/offboard")  # a retry: slashed once all the same
        assert stake() == before - amount
        lines = [
            line
            for line in operator.admin("GET", "/earnings", params={"provider": "hasty-dc"})[0]["lines"]
            if line["kind"] == "slash"
        ]
        assert [line["refs"]["cause"] for line in lines] == ["undrained_offboard"]
        assert {n["name"]: n["state"] for n in tenant.nodes()}["hasty-1"] == "offboarded"
        tenant.cancel(w["id"])
        assert tenant.wait(w["id"], timeout_s=120)["state"] == "CANCELLED"
