"""API keys are listed, rotated and revoked, and a revoked key or a rejected tenant is refused at
the control plane and at the gateway (issue 15, point 4).

The real API over a real store (HTTPS on loopback), the real CLI as a subprocess, and the real
gateway (``Gateway`` with its ``Control``) reading that API. Each revocation is an attack replayed
afterwards: the old key is sent again and must be refused, by the API on the next request and by
the gateway once it has read its routes (``access_epoch``; it does so every half second).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.core.policy import KYC
from runner.gateway.control import Control
from runner.gateway.proxy import Gateway
from runner.settings import Settings
from runner.store import Store, key_id
from tests.integration.test_cli import run
from tests.support.inprocess_api import served


def call(settings: Settings, key: str, method: str, path: str) -> httpx.Response:
    with httpx.Client(base_url=settings.server_url, verify=settings.server_verify) as http:
        return http.request(method, path, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def gateway_status(app: Gateway, key: str) -> tuple[int, str]:
    """A tenant's request at the gateway for a service it does not have: 404 ``service_not_found``
    when the key is good (the key is checked first), and the error's code."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        r = await http.post("/s/none/v1/embeddings", json={"input": "hi"}, headers={"Authorization": f"Bearer {key}"})
        return r.status_code, r.json()["error"]["code"]


@pytest.fixture
def network(tmp_path: Path) -> Any:
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    store.add_tenant("bravo", country="DE", kyc=KYC.VERIFIED)
    with served(tmp_path / "home", store) as settings:
        yield store, settings


def test_a_tenant_lists_rotates_and_revokes_its_keys_and_old_keys_stop_working(network: Any) -> None:
    store, settings = network
    first = store.create_api_key("acme")
    settings.api_key_path.write_text(first)
    bravo = store.create_api_key("bravo")

    listed = json.loads(run(["keys", "ls", "--json"], settings).stdout)
    assert [(k["key_id"], k["current"], k["revoked_at"]) for k in listed] == [(key_id(first), True, None)]
    extra = run(["keys", "new"], settings).stdout.strip()
    assert call(settings, extra, "GET", "/v1/workloads").status_code == 200

    # Rotation: the home's key file holds the new key; the old one is refused from the next request.
    rotated = run(["keys", "rotate"], settings)
    assert rotated.returncode == 0, rotated.stderr
    second = settings.api_key_path.read_text().strip()
    assert second != first and settings.api_key_path.stat().st_mode & 0o077 == 0
    refused = call(settings, first, "GET", "/v1/workloads")
    assert refused.status_code == 401 and f"API key {key_id(first)} was revoked" in refused.json()["message"]
    assert call(settings, second, "GET", "/v1/workloads").status_code == 200

    # Revoking a key by its id; another tenant's key id is not found (and stays valid).
    assert run(["keys", "revoke", key_id(extra)], settings).returncode == 0
    assert call(settings, extra, "GET", "/v1/workloads").status_code == 401
    theirs = call(settings, second, "DELETE", f"/v1/keys/{key_id(bravo)}")
    assert theirs.status_code == 404 and call(settings, bravo, "GET", "/v1/workloads").status_code == 200

    # The operator revokes a leaked key of a tenant.
    assert run(["admin", "tenant", "revoke-key", "bravo", key_id(bravo)], settings).returncode == 0
    assert call(settings, bravo, "GET", "/v1/workloads").status_code == 401
    kinds = [e.kind for e in store.audit_entries() if e.kind.startswith("tenant.key")]
    assert kinds == ["tenant.key", "tenant.key.rotate", "tenant.key.revoke", "tenant.key.revoke"]
    shown = json.loads(run(["admin", "tenant", "keys", "acme", "--json"], settings).stdout)
    assert {k["key_id"]: k["revoked_at"] is not None for k in shown} == {
        key_id(first): True,
        key_id(extra): True,
        key_id(second): False,
    }


def test_the_gateway_refuses_a_revoked_key_and_a_rejected_tenant_once_it_reads_its_routes(network: Any) -> None:
    store, settings = network
    acme, bravo = store.create_api_key("acme"), store.create_api_key("bravo")
    operator = settings.admin_key_path.read_text().strip()

    async def scenario() -> None:
        control = Control(settings.server_url, operator, server_ca=settings.server_ca)
        await control.start()
        app = Gateway(control)
        try:
            good = (404, "service_not_found")
            assert await gateway_status(app, acme) == good  # both keys cached as good
            assert await gateway_status(app, bravo) == good
            # The control: with no access decision made, a re-read of the routes forgets nothing.
            await control.refresh_routes()
            assert control.cached_tenant(acme) == (True, ("acme", None))

            assert call(settings, acme, "DELETE", f"/v1/keys/{key_id(acme)}").status_code == 200
            assert control.cached_tenant(acme)[0]  # still cached here: the next routes read ends that
            await control.refresh_routes()
            assert not control.cached_tenant(acme)[0]
            assert await gateway_status(app, acme) == (401, "invalid_api_key")
            assert await gateway_status(app, bravo) == good

            # A tenant whose KYC is rejected keeps a valid key but is served nothing.
            with httpx.Client(base_url=settings.server_url, verify=settings.server_verify) as http:
                changed = http.post(
                    "/v1/admin/tenants/bravo", json={"kyc": "rejected"}, headers={"Authorization": f"Bearer {operator}"}
                )
            assert changed.status_code == 200
            await control.refresh_routes()
            assert await gateway_status(app, bravo) == (403, "tenant_refused")
        finally:
            await control.stop()

    asyncio.run(scenario())
