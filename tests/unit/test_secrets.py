"""A tenant's secrets are references in a spec, sealed in the database, opened only into a start
command, and masked in stored logs (issue 15, point 9).

The attacks: read the value back through any route; find it in the database's own bytes (a
copy of ``runner.db``); submit a spec naming another tenant's secret; print it from the
workload. The real API over HTTPS, the real CLI, a real ``Supervisor`` building the start
command (no Ray: it does not tick).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.core.network import load_network
from runner.core.policy import KYC
from runner.core.spec import parse_workload
from runner.core.states import ReplicaState, WorkloadState
from runner.settings import Settings
from runner.store import Store
from runner.supervisor import Supervisor
from tests.integration.test_cli import RUNNER
from tests.support.inprocess_api import LOOPBACK_PEER, make_app, served

VALUE = "ghp_s3cr3t-value-that-must-not-leak"
SPEC = {
    "name": "uses-token",
    "kind": "batch",
    "image": "runner/smoke",
    "command": ["true"],
    "secrets": {"TOKEN": "gh-token"},
}


def cli(args: list[str], settings: Settings, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"RUNNER_HOME": str(settings.home), "RUNNER_SERVER_PORT": str(settings.server_port), "PATH": "/usr/bin:/bin"}
    return subprocess.run([*RUNNER, *args], input=stdin, env=env, capture_output=True, text=True, timeout=120)


def database_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("runner.db*"))


def test_a_secret_goes_in_once_and_never_comes_back_out(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    store.add_tenant("mallory", country="DE", kyc=KYC.VERIFIED)
    with served(tmp_path / "home", store) as settings:
        settings.api_key_path.write_text(store.create_api_key("acme"))
        done = cli(["secrets", "set", "gh-token"], settings, stdin=VALUE + "\n")
        assert done.returncode == 0 and VALUE not in done.stdout + done.stderr, done.stderr
        listed = json.loads(cli(["secrets", "ls", "--json"], settings).stdout)
        assert [s["name"] for s in listed] == ["gh-token"] and VALUE not in json.dumps(listed)

        acme = {"Authorization": f"Bearer {settings.api_key_path.read_text()}"}
        mallory = {"Authorization": f"Bearer {store.create_api_key('mallory')}"}
        with httpx.Client(base_url=settings.server_url, verify=settings.server_verify) as http:
            # Another tenant neither lists it nor gets it into its own workload.
            assert http.get("/v1/secrets", headers=mallory).json() == []
            stolen = http.post("/v1/workloads", json={"spec": SPEC}, headers=mallory)
            assert stolen.status_code == 400 and "secrets.TOKEN: this tenant has no secret 'gh-token'" in stolen.text
            # The owner's workload names it; nothing the API answers holds the value.
            w = http.post("/v1/workloads", json={"spec": SPEC}, headers=acme).json()
            answers = [
                http.get(path, headers=acme).text
                for path in ("/v1/workloads", f"/v1/workloads/{w['id']}", "/v1/secrets")
            ]
            assert all(VALUE not in a for a in answers) and '"TOKEN":"gh-token"' in answers[1].replace(" ", "")
        audit = json.dumps([e.payload for e in store.audit_entries()])
        assert "secret.set" in {e.kind for e in store.audit_entries()} and VALUE not in audit
    store.engine.dispose()
    raw = database_bytes(tmp_path)
    assert VALUE.encode() not in raw and b"gh-token" in raw  # sealed: the name is there, the value is not


def test_the_start_command_carries_the_value_and_stored_logs_mask_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    sup = Supervisor(store, Settings(home=tmp_path / "home"), load_network())
    monkeypatch.setattr(sup.cluster, "refresh", lambda force=False: None)  # no Ray here
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    store.put_secret("acme", "gh-token", sup.secret_box.seal(VALUE))
    w, _ = store.create_workload(tenant_id="acme", spec=SPEC)
    w = store.transition(w.id, WorkloadState.PLACED, "placed", attempts=1)
    key = f"{w.id}-r0-a1"
    store.add_replica(key=key, workload_id=w.id, index=0, attempt=1, node="n1", state=ReplicaState.STARTING.value)
    rep = store.get_replica(key)
    request = sup.gangs.request(w, parse_workload(SPEC), rep, [rep])
    assert request.env["TOKEN"] == VALUE  # what the node's container gets (sealed to the node on the way)

    rep.started_at = time.time()
    sup.driver._store_logs(w, rep, [f"token={VALUE}", "plain line", f'{{"runner": "progress", "t": "{VALUE}"}}'])
    stored = [line.line for line in store.logs_after(w.id, 0)]
    assert stored == ["token=[secret gh-token]", "plain line", '{"runner": "progress", "t": "[secret gh-token]"}']
    assert VALUE not in json.dumps(store.get_replica(key).reports)
    store.engine.dispose()
    assert VALUE.encode() not in database_bytes(tmp_path)


def test_a_spec_may_not_name_a_secret_and_set_the_same_variable(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    from fastapi.testclient import TestClient

    http = TestClient(make_app(store), client=LOOPBACK_PEER)
    headers: Any = {"Authorization": f"Bearer {store.create_api_key('acme')}"}
    both = http.post("/v1/workloads", json={"spec": {**SPEC, "env": {"TOKEN": "x"}}}, headers=headers)
    assert both.status_code == 422 and "TOKEN is set in env too" in both.text
    reserved = http.post(
        "/v1/workloads", json={"spec": {**SPEC, "secrets": {"LD_PRELOAD": "gh-token"}}}, headers=headers
    )
    assert reserved.status_code == 422 and "'LD_PRELOAD' is reserved" in reserved.text
