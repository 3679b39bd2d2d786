"""Issue 11: one tenant's number must not stop the supervisor for every tenant.

Against the real session cluster: a spec with ``1e309`` sent as raw JSON is refused with a 4xx
that names the field and stores nothing; an operator's body with one is refused the same way; a
spec stored by an older version with an infinite price cap (what the issue's server had in its
database) is failed alone while a healthy job submitted beside it runs; and the CLI prints one
line, never a traceback, for such a spec.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.core.errors import NotFoundError
from runner.core.policy import KYC
from runner.core.spec import parse_workload, spec_to_dict
from runner.settings import Settings
from runner.store import Store
from tests.conftest import wait_for
from tests.integration.test_cli import run as run_cli
from tests.integration.test_workloads import smoke

pytestmark = pytest.mark.cluster

POISON = (
    b'{"spec": {"kind": "batch", "name": "poison", "image": "runner/smoke:latest", '
    b'"command": ["python", "-m", "workloads.smoke"], "resources": {"cpu": 0.5}, '
    b'"placement": {"max_price_per_gpu_hour": 1e309}}, "source": "job.json"}'
)


def _post(settings: Settings, path: str, body: bytes, key_path: Path) -> httpx.Response:
    return httpx.post(
        f"{settings.server_url}{path}",
        content=body,
        timeout=30,
        verify=settings.server_verify,
        headers={"Authorization": f"Bearer {key_path.read_text().strip()}", "Content-Type": "application/json"},
    )


def test_1e309_through_the_api_is_a_4xx_naming_the_field_and_stores_nothing(
    cluster_settings: Settings, client: Any
) -> None:
    before = {w["id"] for w in client.list(limit=1000)}
    for body in (POISON, POISON.replace(b"1e309", b"NaN"), POISON.replace(b"1e309", b"-Infinity")):
        response = _post(cluster_settings, "/v1/workloads", body, cluster_settings.api_key_path)
        assert response.status_code == 422, response.text
        answer = response.json()
        assert answer["error"] == "SpecError"
        assert answer["message"].startswith("job.json: placement.max_price_per_gpu_hour: must be a finite number ")
    assert (
        "<= 1000, got inf"
        in _post(cluster_settings, "/v1/workloads", POISON, cluster_settings.api_key_path).json()["message"]
    )
    assert {w["id"] for w in client.list(limit=1000)} == before  # nothing stored
    # ... and the loop goes on: the next healthy job runs.
    w = client.submit(smoke(), source="smoke.yaml")
    done = client.wait(w["id"], timeout_s=120)
    assert done["state"] == "SUCCEEDED", done["message"]


def test_an_operators_infinite_amount_is_a_4xx_naming_the_field(cluster_settings: Settings, operator: Any) -> None:
    tenants = {t["id"] for t in operator.admin("GET", "/tenants")}
    for path, body, field in [
        ("/v1/admin/tenants", b'{"id": "inf-budget", "country": "DE", "budget_usd": 1e309}', "budget_usd"),
        ("/v1/admin/providers", b'{"id": "inf-stake", "country": "DE", "stake_usd": NaN}', "stake_usd"),
        (
            "/v1/admin/tokens",
            b'{"provider": "inf-stake", "region": "eu-west", "country": "DE", "ttl_s": Infinity}',
            "ttl_s",
        ),
    ]:
        response = _post(cluster_settings, path, body, cluster_settings.admin_key_path)
        assert response.status_code == 422, response.text
        assert response.json()["message"].startswith(f"bad request: {field}: must be a finite number <= ")
    assert {t["id"] for t in operator.admin("GET", "/tenants")} == tenants
    assert "inf-stake" not in {p["id"] for p in operator.admin("GET", "/providers")}


def test_a_stored_infinite_price_fails_that_workload_alone(cluster_settings: Settings, client: Any) -> None:
    """The issue's server: a row stored before validation was bounded. Its spec no longer parses;
    the supervisor fails it with the field in the reason and goes on placing everyone else."""
    store = Store(cluster_settings.db_url)  # the server's own database: written as an older server did
    try:
        store.get_tenant("legacy")
    except NotFoundError:
        store.add_tenant("legacy", country="DE", kyc=KYC.VERIFIED)
    old = spec_to_dict(parse_workload(smoke(name="legacy-poison")))
    old["placement"]["max_price_per_gpu_hour"] = math.inf
    poison, _ = store.create_workload(tenant_id="legacy", spec=old, source="legacy.yaml")
    healthy = client.submit(smoke(), source="smoke.yaml")
    done = client.wait(healthy["id"], timeout_s=120)
    assert done["state"] == "SUCCEEDED", done["message"]
    failed = wait_for(
        lambda: (w := store.get_workload(poison.id)).state == "FAILED" and w,
        timeout_s=60,
        what="the poisoned workload to fail",
    )
    assert failed.message.startswith(
        "supervisor fault while reading its spec: SpecError: legacy.yaml: placement."
        "max_price_per_gpu_hour: must be a finite number <= 1000, got inf"
    )
    last = store.events(poison.id)[-1]
    assert last.state == "FAILED" and last.message == failed.message
    assert store.replicas(poison.id) == []  # never placed
    # Its owner still reads it: JSON has no infinity, and the API answers null for it.
    key = store.create_api_key("legacy")
    for path in (f"/v1/workloads/{poison.id}", "/v1/workloads"):
        response = httpx.get(
            f"{cluster_settings.server_url}{path}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            verify=cluster_settings.server_verify,
        )
        assert response.status_code == 200, response.text
        assert '"max_price_per_gpu_hour":null' in response.text.replace(" ", "")


def test_the_cli_says_one_line_for_an_infinite_price(tmp_path: Path, cluster_settings: Settings) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("kind: batch\nname: a\nimage: runner/smoke:latest\nplacement:\n  max_price_per_gpu_hour: .inf\n")
    for args in (["validate", str(spec)], ["submit", str(spec)]):
        result = run_cli(args, cluster_settings)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert (
            f"{spec}: placement.max_price_per_gpu_hour: must be a finite number <= 1000, got inf"
            in result.stderr.replace("\n", "")
        )
