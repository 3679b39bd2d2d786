"""A property-based fuzzer over the whole API (issue 15, point 10): schemathesis reads the control
plane's own OpenAPI schema and sends every operation requests it draws from it, valid and not,
with a tenant's key and with the operator's. Zero 5xx, and every answer as the schema says:
its status documented, its content type and its body valid against the declared model.

The control plane is live: the real app over HTTPS on loopback, with a real ``Supervisor`` (its
controllers, rules and cluster view, not ticking: no Ray here, so submitted work stays
PENDING) and a real store with a tenant, a provider, a node and a workload to find.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from runner.core.approval import ApprovedMachine
from runner.core.network import load_network
from runner.core.policy import KYC, NodeState
from runner.settings import Settings
from runner.store import Store
from runner.supervisor import Supervisor
from runner.tls import TlsFiles
from tests.support.inprocess_api import free_port, make_app, serving_https

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class Live:
    """The control plane under test, started once for the module."""

    def __init__(self, home: Path) -> None:
        self.store = Store(f"sqlite:///{home / 'runner.db'}")
        self.settings = Settings(home=home / "home", server_port=free_port())
        self.settings.home.mkdir(parents=True)
        self.supervisor = Supervisor(self.store, self.settings, load_network())
        self.supervisor.cluster.refresh = lambda force=False: None  # type: ignore[method-assign]  # no Ray here
        self.tls = TlsFiles.of(self.settings.home)
        self.tls.issue_head(["127.0.0.1"])
        self.app = make_app(self.store, self.supervisor, authority=self.tls.authority())  # type: ignore[arg-type]
        self.store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED, budget_micros=5_000_000)
        self.store.add_provider("gpu-barn", country="NL", kyc=KYC.VERIFIED)
        self.store.issue_join_token("gpu-barn", ttl_s=600, approved=ApprovedMachine(region="eu-west", country="NL"))
        self.store.register_node(
            name="n1", provider_id="gpu-barn", state=NodeState.ACTIVE, decision={}, region="eu-west", country="NL"
        )
        spec = {"name": "job", "kind": "batch", "image": "runner/smoke", "command": ["true"]}
        self.workload = self.store.create_workload(tenant_id="acme", spec=spec)[0].id
        self.keys = {"tenant": self.store.create_api_key("acme"), "operator": self.store.create_operator_key()}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    control = Live(tmp_path_factory.mktemp("fuzz"))
    with serving_https(control.app, control.tls, control.settings.server_port):
        yield control
    control.store.engine.dispose()


def the_schema() -> Any:
    """The app's OpenAPI schema, from an app with the same routes (what the operator's key reads
    at ``/openapi.json``)."""
    from tests.support.inprocess_api import StubSupervisor

    return schemathesis.openapi.from_dict(make_app(Store("sqlite://"), StubSupervisor()).openapi())


schema = the_schema()


def call(case: Any, live: Live, who: str) -> None:
    case.call_and_validate(
        base_url=live.settings.server_url,
        headers={"Authorization": f"Bearer {live.keys[who]}"},
        checks=CHECKS,
        verify=str(live.tls.ca),
        timeout=30,
    )


FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


@schema.parametrize()
@FUZZ
def test_with_a_tenants_key_every_operation_answers_within_its_schema_and_never_5xx(case: Any, live: Live) -> None:
    call(case, live, "tenant")


@schema.parametrize()
@FUZZ
def test_with_the_operators_key_every_operation_answers_within_its_schema_and_never_5xx(case: Any, live: Live) -> None:
    call(case, live, "operator")
