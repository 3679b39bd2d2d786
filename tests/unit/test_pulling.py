"""A replica whose node pulls its image: PULLING with its bytes on the replica row, asked for at a
bounded rate, stoppable, shown by ``runner status``, and never billed until the container starts.

A real ``Supervisor`` over a real SQLite ``Store`` with no Ray behind it (as in
``test_supervisor_faults``): the node's agent is a stand-in whose calls record what was asked and
return a handle, and the answers are handed to the driver as ``collect`` hands them over.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runner.cli.workloads import replica_state
from runner.core.errors import UserError
from runner.core.network import load_network
from runner.core.policy import KYC
from runner.core.spec import parse_workload, spec_to_dict
from runner.core.states import ReplicaState, WorkloadState
from runner.ray_nodes import RayNode
from runner.runtime import LaunchRequest, ReplicaStatus
from runner.settings import Settings
from runner.store import Replica, Store, Workload
from runner.supervisor import Supervisor, metering, replicas

S, R = WorkloadState, ReplicaState
SMOKE = {"kind": "batch", "name": "smoke", "image": "runner/smoke:latest", "resources": {"cpu": 0.5}}


class Call:
    """One operation of the stand-in agent link: calling it records its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> str:
        self.calls.append(args)
        return f"ref-{len(self.calls)}"


class Agent:
    def __init__(self) -> None:
        self.start, self.status, self.stop, self.wait, self.logs, self.remove, self.list = (Call() for _ in range(7))


class NoStep:
    def step(self, w: Workload) -> None:
        pass


class Clock:
    """``time`` for the driver: monotonic seconds the test moves on; the wall clock as it is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


@pytest.fixture
def sup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    supervisor = Supervisor(store, Settings(home=tmp_path), load_network())
    monkeypatch.setattr(supervisor.cluster, "refresh", lambda force=False: None)  # no Ray here
    supervisor.cluster.nodes = {"n1": RayNode(name="n1", node_id="id-n1", alive=True, labels={})}
    supervisor.cluster.agents = {"n1": Agent()}
    supervisor.controllers["batch"] = NoStep()  # the driver is called by the test, not a controller
    return supervisor


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(replicas, "time", SimpleNamespace(monotonic=c.monotonic, time=c.time))
    return c


def starting(store: Store) -> tuple[Workload, Replica]:
    """A workload whose one replica was placed on n1 ten minutes ago, at $2/h for one unit."""
    w, _ = store.create_workload(tenant_id="acme", spec=spec_to_dict(parse_workload(SMOKE)), source="t")
    for target in (S.PLACED, S.STARTING):
        w = store.transition(w.id, target, target.value.lower())
    store.add_replica(
        key=f"{w.id}-r0-a1",
        workload_id=w.id,
        index=0,
        attempt=1,
        node="n1",
        state=R.STARTING.value,
        provider_id="p1",
        price_micros=2_000_000,
        milli_units=1000,
    )
    store.update_replica(f"{w.id}-r0-a1", created_at=time.time() - 600)
    return w, store.get_replica(f"{w.id}-r0-a1")


def request_for(rep: Replica) -> LaunchRequest:
    return LaunchRequest(
        key=rep.key,
        workload_id=rep.workload_id,
        replica_index=0,
        attempt=1,
        node="n1",
        image="runner/smoke:latest",
        command=["true"],
    )


def pulling(rep: Replica, done_mb: int, total_mb: int) -> ReplicaStatus:
    return ReplicaStatus(
        key=rep.key, state=R.PULLING, pull_done_bytes=done_mb * 1_000_000, pull_total_bytes=total_mb * 1_000_000
    )


def test_a_start_in_flight_is_asked_how_its_pull_goes_at_a_bounded_rate(sup: Supervisor, clock: Clock) -> None:
    w, rep = starting(sup.store)
    agent = sup.cluster.agents["n1"]
    drive = lambda: sup.driver.drive(w, rep, lambda: request_for(rep), stop=False)  # noqa: E731
    drive()
    assert len(agent.start.calls) == 1 and agent.status.calls == []  # a quick start is never asked about
    for step in (0.1, 0.3):
        clock.now += step
        drive()
    assert agent.status.calls == []
    clock.now += replicas.PULL_POLL_S
    drive()
    assert agent.status.calls == [(rep.key,)]
    clock.now += replicas.PULL_POLL_S * 2
    drive()
    assert len(agent.status.calls) == 1  # one answer outstanding: not asked again
    sup.driver.calls[rep.key].progress = None  # answered (``collect`` takes it in)
    sup.driver._apply_progress(w, rep, pulling(rep, 10, 100))
    drive()
    assert len(agent.status.calls) == 2
    for _ in range(10):  # many ticks within one interval: no more questions
        clock.now += replicas.PULL_POLL_S / 20
        sup.driver.calls[rep.key].progress = None
        drive()
    assert len(agent.status.calls) == 2 and len(agent.start.calls) == 1  # and PULLING never starts it again


def test_pulling_is_data_on_the_replica_row_and_never_billed(sup: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metering, "METER_S", 0.0)  # meter every tick
    sup.cluster.agents = {}  # ticks only meter here: no agent is asked anything (no Ray to ask through)
    w, rep = starting(sup.store)
    sup.driver._apply_progress(w, rep, pulling(rep, 312, 1043))
    sup.driver._apply_progress(w, rep, pulling(rep, 500, 1043))
    row = sup.store.get_replica(rep.key)
    assert (row.state, row.pull_done_bytes, row.pull_total_bytes) == (R.PULLING.value, 500_000_000, 1_043_000_000)
    assert row.started_at is None
    events = [e.message for e in sup.store.events(w.id) if "pulling" in e.message]
    assert events == [f"{rep.key}: node n1 is pulling the image"]  # once, on entering PULLING
    assert sup.store.get_workload(w.id).state == S.STARTING.value
    for _ in range(3):
        sup.tick()
    assert sup.store.get_replica(rep.key).metered_s == 0
    assert sup.store.tenant_spent("acme") == 0
    # The container starts (30 s ago, by its own clock); billing counts from there, not from the
    # ten minutes since the replica was placed and its image pulled.
    started = time.time() - 30
    sup.driver._apply(w, rep, ReplicaStatus(key=rep.key, state=R.RUNNING, handle="c1", started_at=started))
    sup.tick()
    billed = sup.store.get_replica(rep.key).metered_s
    assert 30 <= billed <= 35
    # A progress answer that arrives after the start's is ignored.
    sup.driver._apply_progress(w, rep, pulling(rep, 900, 1043))
    assert sup.store.get_replica(rep.key).state == R.RUNNING.value


def test_a_pull_ended_by_a_stop_bills_nothing(sup: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metering, "METER_S", 0.0)
    sup.cluster.agents = {}
    w, rep = starting(sup.store)
    sup.driver._apply_progress(w, rep, pulling(rep, 1, 1043))
    sup.driver._apply(w, rep, ReplicaStatus(key=rep.key, state=R.STOPPED, error="stopped before it started"))
    sup.tick()
    row = sup.store.get_replica(rep.key)
    assert row.state == R.STOPPED.value and row.started_at is None and row.metered_s == 0
    assert sup.store.tenant_spent("acme") == 0


def test_a_stop_goes_to_a_pulling_replica_at_once_but_waits_for_a_plain_start(sup: Supervisor, clock: Clock) -> None:
    """A stop racing a start the runtime cannot cancel waits for the start; a pull it can end."""
    w, rep = starting(sup.store)
    agent = sup.cluster.agents["n1"]
    sup.driver.drive(w, rep, lambda: request_for(rep), stop=False)
    sup.driver.drive(w, rep, lambda: request_for(rep), stop=True)
    assert agent.stop.calls == []
    sup.driver._apply_progress(w, rep, pulling(rep, 1, 10))
    sup.driver.drive(w, rep, lambda: request_for(rep), stop=True, grace_s=3.0)
    assert agent.stop.calls == [(rep.key, 3.0)]


def test_runner_status_shows_the_pull_in_mb() -> None:
    row = {"state": "PULLING", "pull_done_bytes": 312_400_000, "pull_total_bytes": 1_043_000_000}
    assert replica_state(row) == "PULLING 312/1043 MB"
    assert replica_state({**row, "pull_done_bytes": 400_000, "pull_total_bytes": 3_200_000}) == "PULLING 0.4/3.2 MB"
    assert replica_state({**row, "pull_total_bytes": 0}) == "PULLING"  # no layer has told its size yet
    assert replica_state({**row, "state": "RUNNING"}) == "RUNNING"


@pytest.mark.parametrize("value, expected", [(None, 50.0), ("", 50.0), ("0", 0.0), ("12.5", 12.5)])
def test_the_image_cache_budget_setting(
    value: str | None, expected: float, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if value is None:
        monkeypatch.delenv("RUNNER_IMAGE_CACHE_GB", raising=False)
    else:
        monkeypatch.setenv("RUNNER_IMAGE_CACHE_GB", value)
    assert Settings.from_env(tmp_path).image_cache_gb == expected


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "lots", "2e6"])
def test_a_bad_image_cache_budget_is_refused_with_its_name(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RUNNER_IMAGE_CACHE_GB", value)
    with pytest.raises(UserError, match="RUNNER_IMAGE_CACHE_GB"):
        Settings.from_env(tmp_path)
