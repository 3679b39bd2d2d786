"""Running work the rules no longer allow stops or moves (issue 15, point 4).

A real ``Supervisor`` over a real SQLite ``Store`` (no Ray: nothing ticks the fleet) with running
work on two nodes, an H100 and an RTX 4090. The operator then changes a tenant's facts through
the store, as its routes do: the supervisor's own step (``_apply_budgets_and_drains``) must stop
a rejected tenant's work for good (failed, not retried: its gang concludes FAILED), and move an
embargoed tenant's work off the export-controlled H100 only, each with its event and an audit
entry; a service of that tenant plans to replace its H100 replica, not to keep it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from runner.core.events import EventKind, Stop, StopReason
from runner.core.network import load_network
from runner.core.policy import KYC, NodeState
from runner.core.spec import parse_workload, spec_to_dict
from runner.core.states import ReplicaState, WorkloadState
from runner.settings import Settings
from runner.store import Store, Workload
from runner.supervisor import Supervisor

S = WorkloadState
JOB = {"kind": "batch", "name": "job", "image": "runner/smoke:latest", "resources": {"cpu": 0.5}}
SERVICE = {"kind": "inference", "name": "svc", "image": "runner/inference:latest", "replicas": {"min": 1, "max": 2}}


@pytest.fixture
def sup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    s = Supervisor(Store(f"sqlite:///{tmp_path / 'runner.db'}"), Settings(home=tmp_path), load_network())
    monkeypatch.setattr(s.cluster, "refresh", lambda force=False: None)  # no Ray here
    s.store.add_provider("p1", country="DE", kyc=KYC.VERIFIED)
    for name, gpu in (("h100", "H100"), ("rtx", "RTX4090")):
        s.store.register_node(
            name=name,
            provider_id="p1",
            state=NodeState.ACTIVE,
            decision={},
            region="eu-west",
            country="DE",
            gpu_model=gpu,
            gpu_count=1,
        )
    return s


def running(store: Store, spec: dict[str, Any], tenant: str, node: str) -> Workload:
    w, _ = store.create_workload(tenant_id=tenant, spec=spec_to_dict(parse_workload(spec)), source="t")
    for target in (S.PLACED, S.STARTING, S.RUNNING):
        w = store.transition(w.id, target, target.value.lower(), attempts=1, started_at=time.time())
    key = f"{w.id}-r0-a1"
    store.add_replica(key=key, workload_id=w.id, index=0, attempt=1, node=node, state=ReplicaState.RUNNING.value)
    store.update_replica(key, started_at=time.time())
    return store.get_workload(w.id)


def step(sup: Supervisor, *ws: Workload) -> dict[str, Stop | None]:
    """One pass of the supervisor's rule checks over ``ws`` (facts read afresh); each one's stop."""
    sup.compliance._read_at = float("-inf")
    sup._apply_budgets_and_drains([sup.store.get_workload(w.id) for w in ws])
    return {w.id: Stop.of(sup.store.get_workload(w.id)) for w in ws}


def ruled_out(sup: Supervisor) -> list[dict[str, Any]]:
    return [e.payload for e in sup.store.audit_entries(kind="workload.ruled_out")]


def test_a_tenant_whose_kyc_is_rejected_has_its_work_stopped_for_good(sup: Supervisor) -> None:
    store = sup.store
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    store.add_tenant("other", country="DE", kyc=KYC.VERIFIED)
    job, bystander = running(store, JOB, "acme", "rtx"), running(store, JOB, "other", "rtx")
    service = running(store, SERVICE, "acme", "rtx")
    assert step(sup, job, bystander, service) == {job.id: None, bystander.id: None, service.id: None}  # the control

    store.set_tenant("acme", kyc="rejected")
    stops = step(sup, job, bystander, service)
    assert stops[bystander.id] is None
    # The service ends whole (every replica stopped), as a spent budget ends it.
    svc = store.get_workload(service.id)
    ending = sup.controllers["inference"]._stop_reason(svc, sup.spec(svc))
    assert ending is not None and ending.kind is StopReason.REFUSED
    stop = stops[job.id]
    assert stop is not None and stop.kind is StopReason.REFUSED and "KYC is rejected" in stop.detail
    assert any(e.kind == EventKind.STOPPING and "KYC is rejected" in e.message for e in store.events(job.id))
    assert [(p["workload"], p["stop"]) for p in ruled_out(sup)] == [(job.id, "refused"), (service.id, "refused")]
    # Its replica ends; the gang concludes the attempt: FAILED, not retried.
    for rep in sup.gangs.current(store.get_workload(job.id)):
        store.update_replica(rep.key, state=ReplicaState.EXITED.value, exit_code=143, finished_at=time.time())
    w = store.get_workload(job.id)
    reps = sup.gangs.current(w)
    sup.gangs.conclude(w, sup.spec(w), reps, sup.gangs.stop_reason(w, sup.spec(w), reps))
    ended = store.get_workload(job.id)
    assert ended.state == S.FAILED.value and "KYC is rejected" in ended.message


def test_a_tenant_whose_country_becomes_embargoed_moves_off_restricted_gpus_only(sup: Supervisor) -> None:
    store = sup.store
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    on_h100, on_rtx = running(store, JOB, "acme", "h100"), running(store, JOB, "acme", "rtx")
    service = running(store, SERVICE, "acme", "h100")
    assert step(sup, on_h100, on_rtx, service) == {on_h100.id: None, on_rtx.id: None, service.id: None}

    store.set_tenant("acme", country="CN")
    stops = step(sup, on_h100, on_rtx, service)
    assert stops[on_rtx.id] is None and stops[service.id] is None  # a service moves its replicas itself
    moved = stops[on_h100.id]
    assert moved is not None and moved.kind is StopReason.RELOCATE and moved.data["nodes"] == ["h100"]
    assert "export control: H100 is restricted, CN is embargoed" in moved.detail
    assert [p["workload"] for p in ruled_out(sup)] == [on_h100.id]
    # The service's plan replaces the H100 replica: it counts the node as one to leave.
    assert sup.compliance.nodes_ruled_out("acme") == {"h100": "export control: H100 is restricted, CN is embargoed"}
    # The relocated job is placed again (RETRYING), not failed, once its replica has ended.
    for rep in sup.gangs.current(store.get_workload(on_h100.id)):
        store.update_replica(rep.key, state=ReplicaState.EXITED.value, exit_code=143, finished_at=time.time())
    w = store.get_workload(on_h100.id)
    reps = sup.gangs.current(w)
    sup.gangs.conclude(w, sup.spec(w), reps, sup.gangs.stop_reason(w, sup.spec(w), reps))
    assert store.get_workload(on_h100.id).state == S.RETRYING.value


def test_a_provider_whose_kyc_is_rejected_loses_the_work_on_its_nodes(sup: Supervisor) -> None:
    store = sup.store
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    job = running(store, JOB, "acme", "rtx")
    store.set_provider_kyc("p1", "rejected")
    moved = step(sup, job)[job.id]
    assert moved is not None and moved.kind is StopReason.RELOCATE and "provider p1 KYC is rejected" in moved.detail
