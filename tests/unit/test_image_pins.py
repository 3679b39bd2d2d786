"""The network's images by digest (issue 14): the registry takes a push from anyone who reaches
it, so a tag there says nothing; what the operator pushed is pinned by digest, nodes are sent
that digest, and a workload naming a network image the operator never pushed is refused at
submit. The pure rules, the store's pins and their audit, the operator's route, and admission.
(The node side, against a real engine and registry: ``tests/integration/test_image_cache_docker.py``.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from runner.core.errors import UserError
from runner.core.image_refs import (
    canonical,
    digest_problem,
    from_network_registry,
    names_a_registry,
    reference_problem,
    split_reference,
)
from runner.core.policy import KYC
from runner.settings import Settings
from runner.store import Store
from tests.support.inprocess_api import StubSupervisor, make_app

OPERATORS = "sha256:" + "a" * 64
LATER = "sha256:" + "b" * 64


def test_references_split_and_name_their_registry_as_docker_does() -> None:
    assert split_reference("runner/smoke") == ("runner/smoke", "latest")
    assert split_reference("10.0.0.1:5000/runner/smoke") == ("10.0.0.1:5000/runner/smoke", "latest")
    assert split_reference("10.0.0.1:5000/runner/smoke:3") == ("10.0.0.1:5000/runner/smoke", "3")
    assert canonical("runner/smoke") == "runner/smoke:latest" == canonical("runner/smoke:latest")
    assert not names_a_registry("runner/smoke:1") and not names_a_registry("smoke")
    for own in ("ghcr.io/a/b:1", "10.0.0.1:5000/runner/smoke:1", "localhost/x"):
        assert names_a_registry(own), own
    # Only a network (it has a registry) pins, and only the images it serves.
    assert from_network_registry("runner/smoke:1", "10.0.0.1:5000")
    assert not from_network_registry("runner/smoke:1", "")  # CPU mode: the head's own engine
    assert not from_network_registry("ghcr.io/a/b:1", "10.0.0.1:5000")


def test_only_a_network_reference_and_a_sha256_digest_can_be_pinned() -> None:
    assert reference_problem("runner/smoke:2d6fcb3ff2cb") is None
    for bad in ("Runner/Smoke", "ghcr.io/a/b:1", "a b", "runner/smoke@sha256:" + "a" * 64, "x" * 256, ""):
        assert reference_problem(bad), bad
    assert digest_problem(OPERATORS) is None
    for bad in ("sha256:" + "A" * 64, "sha256:abc", "md5:" + "a" * 32, "latest"):
        assert digest_problem(bad), bad


def test_a_pin_is_kept_by_its_canonical_name_and_each_change_audited(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    store.pin_image("runner/smoke", OPERATORS)
    store.pin_image("runner/smoke:latest", OPERATORS)  # the same again: no second entry
    assert store.image_digest("runner/smoke:latest") == OPERATORS == store.image_digest("runner/smoke")
    store.pin_image("runner/smoke:latest", LATER)  # a new build pushed
    assert store.image_digest("runner/smoke") == LATER
    assert store.image_digest("runner/training:latest") is None
    entries = [e.payload for e in store.audit_entries(kind="image.pin")]
    assert [(e["reference"], e["digest"], e["before"]) for e in entries] == [
        ("runner/smoke:latest", OPERATORS, None),
        ("runner/smoke:latest", LATER, OPERATORS),
    ]
    assert store.verify_audit().ok
    with pytest.raises(UserError, match="not a digest"):
        store.pin_image("runner/smoke:1", "latest")
    with pytest.raises(UserError, match="names a registry"):
        store.pin_image("evil.example/runner/smoke:1", OPERATORS)


def network_head(tmp_path: Path) -> tuple[Store, TestClient, dict[str, str], dict[str, str]]:
    """A network head's API (it has a registry) over a real store; the operator's and a KYC'd
    tenant's headers."""
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    supervisor = StubSupervisor(settings=Settings(home=tmp_path, registry="10.0.0.1:5000"))
    api = TestClient(make_app(store, supervisor))
    operator = {"Authorization": f"Bearer {store.create_operator_key()}"}
    tenant_key = store.create_api_key("acme")
    store.set_tenant("acme", kyc=KYC.VERIFIED.value, country="DE")
    return store, api, operator, {"Authorization": f"Bearer {tenant_key}"}


def test_only_the_operator_pins_an_image(tmp_path: Path) -> None:
    store, api, operator, tenant = network_head(tmp_path)
    body = {"reference": "runner/smoke:latest", "digest": OPERATORS}
    refused = api.put("/v1/admin/images", json=body, headers=tenant)
    assert refused.status_code == 401 and refused.json()["error"] == "AuthError", refused.text
    assert store.image_digest("runner/smoke:latest") is None
    assert api.put("/v1/admin/images", json={**body, "digest": "sha256:abc"}, headers=operator).status_code == 422
    pinned = api.put("/v1/admin/images", json=body, headers=operator)
    assert pinned.status_code == 200 and pinned.json()["digest"] == OPERATORS, pinned.text
    listed = api.get("/v1/admin/images", headers=operator).json()
    assert [(p["reference"], p["digest"]) for p in listed] == [("runner/smoke:latest", OPERATORS)]


def test_a_workload_naming_a_network_image_the_operator_never_pushed_is_refused_at_submit(tmp_path: Path) -> None:
    store, api, _operator, tenant = network_head(tmp_path)
    spec = {"kind": "batch", "name": "t", "image": "runner/smoke:latest", "command": ["true"]}
    refused = api.post("/v1/workloads", json={"spec": spec}, headers=tenant)
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"].startswith("image: 'runner/smoke:latest' is not in this network's registry")
    assert store.list_workloads(tenant_id="acme") == []
    store.pin_image("runner/smoke:latest", OPERATORS)
    assert api.post("/v1/workloads", json={"spec": spec}, headers=tenant).status_code == 201
    # A registry of the tenant's own choosing is theirs to trust: not the network's to pin.
    own = {**spec, "name": "own", "image": "registry.example/acme/tool:1"}
    assert api.post("/v1/workloads", json={"spec": own}, headers=tenant).status_code == 201
