"""Control state is data, never message text (issue 12): rewording every event message and every
stop reason in a database changes nothing a restarted control plane recovers.

A real ``Supervisor`` over a real SQLite ``Store`` (no Ray: nothing here ticks the fleet) writes a
history through its own controllers' code paths: a service's replica ends and an autoscaler
resize, a session's announcement and an open SLA breach, a drain relocating a batch job, a spent
budget stopping a service, a player ending a session. Then every ``events.message`` and
``workloads.stop_reason`` is rewritten to ``"x"`` and a new ``Store`` and ``Supervisor`` open the
same file: what they rebuild (size, ended replicas, announcements, breaches, what each stop
means, where the relocated job goes next) must be what they rebuilt before the rewrite. On the
code before this change (which parsed ``scaling up 1 -> 3``, ``replica ``, ``serving at ``,
``SLA breach: ``, ``relocate: ``...) the recovered state differs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from runner.core.autoscale import Scale
from runner.core.events import EventKind, Stop, StopReason
from runner.core.network import load_network
from runner.core.policy import KYC, NodeState
from runner.core.services import service_view
from runner.core.sessions import SlaChange, sla_state
from runner.core.spec import parse_workload, spec_to_dict
from runner.core.states import ReplicaState, WorkloadState
from runner.settings import Settings
from runner.store import Store, Workload
from runner.supervisor import Supervisor

S = WorkloadState
BATCH = {"kind": "batch", "name": "job", "image": "runner/smoke:latest", "resources": {"cpu": 0.5}}
SERVICE = {"kind": "inference", "name": "svc", "image": "runner/inference:latest", "replicas": {"min": 1, "max": 4}}
SESSION = {
    "kind": "gaming",
    "name": "play",
    "image": "runner/gaming:latest",
    "game": "breakout",
    "near": "eu-west",
    "ports": [8000],
    "resources": {"cpu": 1.0},
}


def supervisor(url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    """A control plane starting on the database at ``url`` (a restart, when it holds rows)."""
    sup = Supervisor(Store(url), Settings(home=home), load_network())
    monkeypatch.setattr(sup.cluster, "refresh", lambda force=False: None)  # no Ray here
    return sup


def running(store: Store, spec: dict[str, Any], tenant: str = "acme") -> Workload:
    w, _ = store.create_workload(tenant_id=tenant, spec=spec_to_dict(parse_workload(spec)), source="t")
    for target in (S.PLACED, S.STARTING, S.RUNNING):
        w = store.transition(w.id, target, target.value.lower(), attempts=1, started_at=time.time())
    return w


def replica(store: Store, w: Workload, index: int, attempt: int, node: str, **fields: Any) -> Any:
    key = f"{w.id}-r{index}-a{attempt}"
    store.add_replica(
        key=key, workload_id=w.id, index=index, attempt=attempt, node=node, state=ReplicaState.RUNNING.value
    )
    store.update_replica(key, started_at=time.time(), **fields)
    return store.get_replica(key)


class Scaler:
    """An autoscaler whose load says: three replicas (the service's own ``_autoscale`` writes it)."""

    def observe(self, now: float, current: int, samples: list[Any]) -> Scale:
        return Scale(current, 3, "7.0 requests in flight on 1 serving replica(s) (target 2 each), 3 queued")


def write_history(sup: Supervisor) -> dict[str, str]:
    """A realistic history, written by the controllers' own code; the workloads' ids by role."""
    store = sup.store
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    store.add_tenant("broke", country="DE", kyc=KYC.VERIFIED, budget_micros=0)
    store.add_provider("p1", country="DE", kyc=KYC.VERIFIED)
    store.register_node(
        name="n1", provider_id="p1", state=NodeState.ACTIVE, decision={}, region="eu-west", country="DE"
    )
    store.register_node(
        name="n2", provider_id="p1", state=NodeState.ACTIVE, decision={}, region="eu-west", country="DE"
    )

    # A service: scaled 1 -> 3, one replica lost and one exited, each end recorded once.
    services = sup.controllers["inference"]
    svc = running(store, SERVICE)
    spec = sup.spec(svc)
    replica(store, svc, 0, 1, "n1")
    replica(store, svc, 1, 1, "n2")
    services._load(svc, spec)
    services._scalers[svc.id] = Scaler()
    services._autoscale(svc, spec, store.replicas(svc.id))
    now = time.time()
    store.update_replica(f"{svc.id}-r0-a1", state=ReplicaState.LOST.value, finished_at=now, error="node vanished")
    store.update_replica(f"{svc.id}-r1-a1", state=ReplicaState.EXITED.value, finished_at=now, exit_code=1)
    services._record_ends(svc, spec, store.replicas(svc.id))
    replica(store, svc, 0, 2, "n2")

    # A session: announced on attempt 1, its SLA breached and still open; then its player ends it.
    sessions = sup.controllers["gaming"]
    play = running(store, SESSION)
    rep = replica(
        store,
        play,
        0,
        1,
        "n1",
        ports={"8000/tcp": "127.0.0.1:4000"},
        reports={"session": {"event": "ready", "ready_s": 1.5}},
    )
    sessions._announce(play, rep, sup.spec(play))
    sessions._record(play, rep, SlaChange("recovered", "fps and latency within the promise for 10s"))
    sessions._record(play, rep, SlaChange("breach", "fps 20 < 57 (95% of 60) for 12s"))
    store.update_workload(play.id, **Stop(StopReason.END, "ended by the player", {"by": "player"}).fields())

    # A batch job on a node that drains: the supervisor asks it to move (a relocation).
    job = running(store, BATCH)
    replica(store, job, 0, 1, "n1")
    store.move_node("n1", NodeState.DRAINING, "draining", by="operator")
    # A service whose tenant's budget is spent: the supervisor asks it to stop.
    poor = running(store, {**SERVICE, "name": "poor"}, tenant="broke")
    sup._apply_budgets_and_drains([store.get_workload(job.id), store.get_workload(poor.id)])
    return {"service": svc.id, "session": play.id, "job": job.id, "poor": poor.id}


def recovered(sup: Supervisor, ids: dict[str, str]) -> dict[str, Any]:
    """What a control plane starting on this database rebuilds, and what it then decides."""
    store = sup.store
    svc, play, job, poor = (store.get_workload(ids[k]) for k in ("service", "session", "job", "poor"))
    services, sessions = sup.controllers["inference"], sup.controllers["gaming"]
    services._load(svc, sup.spec(svc))
    sessions._load(play)
    view = service_view(svc, sup.spec(svc), store.replicas(svc.id), store.events(svc.id), gateway=None, now=time.time())
    stops = {k: (s.kind, s.detail, s.data) if (s := Stop.of(store.get_workload(i))) else None for k, i in ids.items()}
    # What the stops make the controllers do next: the drained job is placed again, not failed.
    reps = sup.gangs.current(job)
    for rep in reps:
        store.update_replica(rep.key, state=ReplicaState.EXITED.value, exit_code=143, finished_at=time.time())
    reps = sup.gangs.current(job)
    sup.gangs.conclude(job, sup.spec(job), reps, sup.gangs.stop_reason(job, sup.spec(job), reps))
    moved = store.get_workload(job.id)
    poor_stop = services._stop_reason(poor, sup.spec(poor))
    return {
        "desired": services._desired[svc.id],
        "ended": services._ended[svc.id],
        "view_desired": view["replicas"]["desired"],
        "announced": set(sessions._announced),
        "breached": {k: w.breached for k, w in sessions._watches.items()},
        "sla": {k: v for k, v in sla_state(store.events(play.id)).items() if k != "last"},
        "stops": stops,
        "poor_stops": poor_stop.kind if poor_stop else None,
        "job": (moved.state, moved.relocations, moved.stop_kind),
        "kinds": [e.kind for e in store.events(svc.id)] + [e.kind for e in store.events(play.id)],
    }


def rewrite_every_message(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE events SET message = 'x'"))
        conn.execute(text("UPDATE workloads SET stop_reason = 'x' WHERE stop_reason != ''"))
    engine.dispose()


def test_rewording_every_message_changes_nothing_a_restart_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, copy = tmp_path / "runner.db", tmp_path / "before.db"
    first = supervisor(f"sqlite:///{db}", tmp_path, monkeypatch)
    ids = write_history(first)
    first.store.engine.dispose()  # all written to the file (no journal left beside it): a stopped control plane
    shutil.copy(db, copy)
    before = recovered(supervisor(f"sqlite:///{copy}", tmp_path, monkeypatch), ids)
    svc, play = ids["service"], ids["session"]
    # The history is what it says: the test would be empty otherwise.
    assert before["desired"] == before["view_desired"] == 3
    assert before["ended"] == {f"{svc}-r0-a1", f"{svc}-r1-a1"}
    assert before["announced"] == {f"{play}-r0-a1"} and before["breached"] == {f"{play}-r0-a1": True}
    assert before["sla"] == {"state": "breached", "breaches": 1}
    assert before["stops"]["job"][0] is StopReason.RELOCATE and before["stops"]["job"][2] == {"nodes": ["n1"]}
    assert before["stops"]["session"][0] is StopReason.END and before["poor_stops"] is StopReason.BUDGET
    assert before["job"] == (S.RETRYING.value, 1, "")  # relocated: placed again, not a failure
    assert EventKind.SCALED in before["kinds"] and EventKind.SESSION_READY in before["kinds"]

    rewrite_every_message(f"sqlite:///{db}")
    after = recovered(supervisor(f"sqlite:///{db}", tmp_path, monkeypatch), ids)
    assert after == before


def test_the_migration_reads_the_old_messages_once(tmp_path: Path) -> None:
    """A database from before kinds: 0003 gives its old messages and stop reasons their kinds."""
    from sqlalchemy.orm import Session

    from tests.support import legacy_models as legacy

    url = f"sqlite:///{tmp_path / 'old.db'}"
    legacy.make_legacy_database(url, with_pull_columns=True)
    engine = create_engine(url)
    with Session(engine) as s, s.begin():
        s.add(legacy.Tenant(id="acme", country="DE"))
        for wid, kind, reason in (
            ("w-s", "inference", ""),
            ("w-g", "gaming", "end: ended by the player"),
            ("w-b", "batch", "relocate: move off draining node n1"),
            ("w-p", "inference", "budget exhausted: spent 1 of 1 USD"),
        ):
            s.add(
                legacy.Workload(
                    id=wid, tenant_id="acme", name=wid, kind=kind, spec={}, state="RUNNING", stop_reason=reason
                )
            )
        s.flush()
        for wid, message in (
            ("w-s", "scaling up 1 -> 3: load"),
            ("w-s", "replica w-s-r0-a1 on n1 was lost"),
            ("w-s", "starting w-s-r0-a2 on n2: replacing"),
            ("w-g", "serving at http://127.0.0.1:4000/ (attempt 2, node n1)"),
            ("w-g", "SLA breach: fps 20 < 57 for 12s"),
            ("w-g", "SLA recovered: ok for 10s"),
            ("w-b", "attempt 1 failed: replica 0 on n1 exited with code 1"),
        ):
            s.add(legacy.Event(workload_id=wid, state="RUNNING", message=message))
    engine.dispose()
    store = Store(url)
    got = {
        (e.workload_id, e.kind, tuple(sorted((e.data or {}).items())))
        for w in ("w-s", "w-g", "w-b")
        for e in store.events(w)
    }
    assert got == {
        ("w-s", "scaled", (("from", 1), ("to", 3))),
        ("w-s", "replica_ended", (("key", "w-s-r0-a1"), ("node", "n1"))),
        ("w-s", "note", ()),
        (
            "w-g",
            "session_ready",
            (("attempt", 2), ("key", "w-g-r0-a2"), ("node", "n1"), ("url", "http://127.0.0.1:4000/")),
        ),
        ("w-g", "sla_breach", (("detail", "fps 20 < 57 for 12s"),)),
        ("w-g", "sla_recovered", (("detail", "ok for 10s"),)),
        ("w-b", "note", ()),
    }
    stops = {w: Stop.of(store.get_workload(w)) for w in ("w-s", "w-g", "w-b", "w-p")}
    assert stops["w-s"] is None
    assert stops["w-g"] == Stop(StopReason.END, "ended by the player")
    assert stops["w-b"] == Stop(StopReason.RELOCATE, "move off draining node n1")
    assert stops["w-p"] == Stop(StopReason.BUDGET, "budget exhausted: spent 1 of 1 USD")
    assert stops["w-b"].message == "relocate: move off draining node n1"  # the words people saw stay
    store.engine.dispose()
