"""A fault in one workload's part of a supervisor tick is that workload's alone.

A real ``Supervisor`` over a real SQLite ``Store`` ticks with no Ray cluster behind it (its
cluster view sees no nodes: ``ClusterView.refresh`` is the one call that needs Ray). What faults is real
where a real fault can be made: a spec stored under an older version's looser rules (an infinite
price cap, as issue 11 had it), a replica row whose metering overflows the database's integer.
Only "a controller's step raises" needs a stand-in: a controller class that raises for one
workload id.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from runner.core.network import load_network
from runner.core.policy import KYC
from runner.core.spec import parse_workload, spec_to_dict
from runner.core.states import ReplicaState, WorkloadState
from runner.settings import Settings
from runner.store import Store, Workload
from runner.supervisor import Supervisor, core, metering

S = WorkloadState
SMOKE = {"kind": "batch", "name": "smoke", "image": "runner/smoke:latest", "resources": {"cpu": 0.5}}


@pytest.fixture
def sup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    supervisor = Supervisor(store, Settings(home=tmp_path), load_network())
    monkeypatch.setattr(supervisor.cluster, "refresh", lambda force=False: None)  # no Ray here: no nodes
    return supervisor


def submit(store: Store, spec: dict[str, Any] | None = None) -> Workload:
    row, _ = store.create_workload(tenant_id="acme", spec=spec or spec_to_dict(parse_workload(SMOKE)), source="t")
    return row


def running(store: Store, spec: dict[str, Any] | None = None) -> Workload:
    w = submit(store, spec)
    for target in (S.PLACED, S.STARTING, S.RUNNING):
        w = store.transition(w.id, target, target.value.lower())
    return w


class Stepper:
    """A controller that records what it steps, and raises for one workload."""

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.stepped: list[str] = []

    def step(self, w: Workload) -> None:
        if w.id == self.bad:
            raise RuntimeError(f"step of {w.id} went wrong")
        self.stepped.append(w.id)


def test_a_step_that_raises_fails_that_workload_and_the_others_go_on(sup: Supervisor) -> None:
    healthy = [running(sup.store) for _ in range(3)]
    bad = running(sup.store)
    stepper = Stepper(bad.id)
    sup.controllers["batch"] = stepper
    for tick in range(1, core.FAULT_LIMIT + 2):
        sup.tick()
        assert stepper.stepped.count(healthy[0].id) == tick  # every tick steps the healthy ones
        assert sorted(set(stepper.stepped)) == sorted(w.id for w in healthy)
    w = sup.store.get_workload(bad.id)
    reason = (
        f"supervisor fault while stepping ({core.FAULT_LIMIT} times in a row): "
        f"RuntimeError: step of {bad.id} went wrong"
    )
    assert w.state == S.FAILED.value and w.message == reason and w.stop_reason == reason
    events = [(e.state, e.message) for e in sup.store.events(bad.id)]
    assert events[-1] == (S.FAILED.value, reason)
    faults = [m for _, m in events if "tried again" in m]
    assert faults == [
        f"supervisor fault while stepping ({n} of {core.FAULT_LIMIT}; tried again next tick): "
        f"RuntimeError: step of {bad.id} went wrong"
        for n in range(1, core.FAULT_LIMIT)
    ]
    assert all(sup.store.get_workload(h.id).state == S.RUNNING.value for h in healthy)


def test_a_passing_fault_is_forgiven(sup: Supervisor) -> None:
    w = running(sup.store)
    stepper = Stepper(w.id)
    sup.controllers["batch"] = stepper
    for _ in range(core.FAULT_LIMIT - 1):
        sup.tick()
    stepper.bad = ""  # it recovers: the count starts again
    sup.tick()
    stepper.bad = w.id
    for _ in range(core.FAULT_LIMIT - 1):
        sup.tick()
    assert sup.store.get_workload(w.id).state == S.RUNNING.value


def test_a_spec_stored_with_an_infinite_price_fails_alone_and_placement_goes_on(sup: Supervisor) -> None:
    """Issue 11: a price cap of inf was stored; converting it to micro-USD raised OverflowError
    in every tick, so nothing was placed for anyone. Now it is failed at once, with its field."""
    poison_spec = spec_to_dict(parse_workload(SMOKE))
    poison_spec["placement"]["max_price_per_gpu_hour"] = math.inf
    poison = submit(sup.store, poison_spec)
    healthy = submit(sup.store)
    sup.tick()
    w = sup.store.get_workload(poison.id)
    assert w.state == S.FAILED.value
    assert w.message.startswith(
        "supervisor fault while reading its spec: SpecError: t: placement."
        "max_price_per_gpu_hour: must be a finite number <= 1000, got inf"
    )
    assert sup.store.events(poison.id)[-1].state == S.FAILED.value
    # The healthy one got its placement decision (no node in this cluster: it waits, with reasons).
    h = sup.store.get_workload(healthy.id)
    assert h.state == S.PENDING.value and h.message and sup.store.last_placement(healthy.id) is not None


def test_a_metering_fault_is_that_workloads_alone(sup: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metering, "METER_S", 0.0)  # meter every tick, not every 5 s
    sup.controllers["batch"] = Stepper("")
    healthy, bad = running(sup.store), running(sup.store)
    now = sup.store.get_workload(healthy.id).created_at
    for w, started in ((healthy, now - 30), (bad, -1e30)):  # billing from -1e30 s overflows SQLite's integer
        sup.store.add_replica(
            key=f"{w.id}-r0-a1",
            workload_id=w.id,
            index=0,
            attempt=1,
            node="n1",
            state=ReplicaState.RUNNING.value,
            provider_id="p1",
            price_micros=2_000_000,
            milli_units=1000,
        )
        sup.store.update_replica(f"{w.id}-r0-a1", started_at=started)
    for _ in range(core.FAULT_LIMIT):
        sup.tick()
    assert sup.store.get_replica(f"{healthy.id}-r0-a1").metered_s >= 30  # billed
    assert sup.store.tenant_spent("acme") > 0
    w = sup.store.get_workload(bad.id)
    assert w.state == S.FAILED.value
    assert w.message.startswith(f"supervisor fault while metering ({core.FAULT_LIMIT} times in a row): OverflowError")
    rep = sup.store.get_replica(f"{bad.id}-r0-a1")
    assert rep.state == ReplicaState.STOPPED.value and rep.finished_at is not None
    assert rep.error.startswith("stopped: supervisor fault while metering")
    assert sup.store.get_workload(healthy.id).state == S.RUNNING.value
