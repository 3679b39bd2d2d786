"""Services: an inference workload's life. Replicas are independent; the service runs for good.

Unlike a gang, a service has no attempt that ends: each replica lives in a slot (``runner/
services.py`` has the rules) and is replaced alone when it ends, while the others keep serving.

    PENDING -> PLACED -> STARTING <-> RUNNING      RUNNING while at least one replica serves
                            └───────────┴──> CANCELLED (cancel), FAILED (budget, timeout, or
                                             every replica in a crash loop and none left)

Each step: take in the agents' answers, drive every live replica (start, wait, logs; stop for
the retired), record each replica's end once as an event, plan (replace, move off a leaving
node, retire, give up a crash loop), place and start new replicas beside the live ones (on
nodes and providers the service does not use yet, when any has room), let the autoscaler
resize the service from its replicas' metrics reports, and move the state.

**Retiring without dropped requests.** A replica that is scaled away, or replaced because its
node drains, first leaves the gateway's routing (``unroutable``, read by ``GET
/v1/gateway/routes``) and is stopped only ``RETIRE_GRACE_S`` later, so the gateway, which polls
twice a second, has stopped sending before the replica gets SIGTERM. Node drains are this
controller's business (``moves_replicas_itself``): the successor starts before the old replica
stops, so capacity never dips.

What it keeps in memory (autoscaler clocks, the retire timers, the last refusal message) is
either rebuilt from events after a restart (the service's size, which ends are recorded) or
harmless to lose (a timer starts again).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from runner.core.autoscale import Autoscaler, Policy, Sample
from runner.core.demand import Demand
from runner.core.events import NO_STOP, EventKind, Stop, StopReason
from runner.core.nodetable import NodeTable
from runner.core.placement import Decision
from runner.core.policy import NodeState
from runner.core.service_placement import ServicePlacer
from runner.core.services import (
    ENDED,
    Slot,
    counts_as_failure,
    describe_end,
    desired_from_events,
    ended_keys,
    plan,
    serves,
    slots_of,
)
from runner.core.spec import InferenceSpec
from runner.core.states import ReplicaState, WorkloadState
from runner.runtime import LaunchRequest, replica_key
from runner.store import Replica, Workload
from runner.supervisor.ports import ControllerHost

log = logging.getLogger("runner.service")
S = WorkloadState

#: Seconds between a replica leaving the gateway's routing and its SIGTERM (the gateway polls
#: its routes every 0.5 s).
RETIRE_GRACE_S = 1.5
#: After a refused placement, wait this long before asking placement again.
PLACE_RETRY_S = 2.0
EXPLAIN_ROWS = 200


class ServiceController:
    #: The supervisor leaves node drains to this controller (see the module docstring).
    moves_replicas_itself = True

    def __init__(self, supervisor: ControllerHost) -> None:
        self.sup = supervisor
        self.store = supervisor.store
        self.driver = supervisor.driver
        self._desired: dict[str, int] = {}
        self._ended: dict[str, set[str]] = {}
        self._scalers: dict[str, Autoscaler] = {}
        self._retiring: dict[str, float] = {}  # replica key -> when it left routing (monotonic)
        self._place_at: dict[str, float] = {}  # workload -> earliest next placement try after a refusal
        self._refused: dict[str, str] = {}  # workload -> the last refusal recorded as an event
        self._leaving: tuple[float, set[str]] = (0.0, set())
        #: Replicas the gateway must not route to (being retired); replaced whole, read by the API.
        self.unroutable: frozenset[str] = frozenset()

    # -- placing the first replicas (Placing decided where) ----------------------------
    def launch(self, w: Workload, decision: Decision, terms: list[dict[str, Any]]) -> None:
        # None yet, unless a crash came between writing these rows and the move below: the next
        # attempt of each slot, so a key is never written twice.
        slots = slots_of(self.store.replicas(w.id))
        for index, (node, term) in enumerate(zip(decision.nodes, terms)):
            attempt = slots.get(index, Slot(index)).next_attempt
            self.store.add_replica(
                key=replica_key(w.id, index, attempt),
                workload_id=w.id,
                index=index,
                attempt=attempt,
                node=node,
                state=ReplicaState.STARTING.value,
                **term,
            )
        w = self.sup.move(
            w,
            S.PLACED,
            f"{len(decision.nodes)} replica(s) placed on {', '.join(decision.nodes)}",
            attempts=max(w.attempts, 1),
            node=decision.nodes[0],
            **NO_STOP,
        )
        w = self.sup.move(w, S.STARTING, "starting")
        self.step_active(w)

    def current(self, w: Workload) -> list[Replica]:
        """The service's live replicas."""
        return [r for r in self.store.replicas(w.id) if r.finished_at is None]

    # -- stepping ------------------------------------------------------------------------------------
    def step(self, w: Workload) -> None:
        if WorkloadState(w.state) in (S.PLACED, S.STARTING, S.RUNNING):  # (a service never retries whole)
            self.step_active(w)

    def step_active(self, w: Workload) -> None:
        spec = self.sup.spec(w)
        if not isinstance(spec, InferenceSpec):  # the supervisor steps only services here
            raise TypeError(f"{w.id} is a {spec.kind} workload, not an inference service")
        if WorkloadState(w.state) == S.PLACED:
            w = self.sup.move(w, S.STARTING, "starting")
        self._load(w, spec)
        for rep in self.store.replicas(w.id):
            if rep.key in self.driver.calls:
                self.driver.collect(w, rep)
        reps = self.store.replicas(w.id)
        stopping = self._stop_reason(w, spec)
        if stopping is not None:
            self._stop_all(w, spec, reps, stopping)
            return
        if w.stop_kind == StopReason.RELOCATE.value:  # drains are handled replica by replica, below
            self.store.update_workload(w.id, **NO_STOP)
        now = time.monotonic()
        ended = self._ended[w.id]
        for rep in reps:
            if rep.finished_at is None:
                retired_at = self._retiring.get(rep.key)
                self.driver.drive(
                    w,
                    rep,
                    lambda r=rep: self.request(w, spec, r),
                    stop=retired_at is not None and now - retired_at >= RETIRE_GRACE_S,
                )
            elif rep.key not in ended and rep.state != ReplicaState.LOST.value:  # its last log lines
                self.driver.drive(w, rep, lambda r=rep: self.request(w, spec, r), stop=False)
        self._record_ends(w, spec, reps)
        desired = self._desired[w.id]
        leaving = self._leaving_nodes() | set(self.sup.compliance.nodes_ruled_out(w.tenant_id))
        p = plan(reps, desired=desired, leaving=leaving, retries=spec.retries, now=time.time())
        for rep, why in p.retire:
            self._retire(w, rep, why)
        slots = slots_of(reps)
        # A slot's new replica waits until its predecessor's end is recorded (final logs in), so
        # the timeline reads in order and "served or not" is judged on every line.
        starts = [
            (i, why) for i, why in p.start if (last := slots.get(i, Slot(i)).last_end) is None or last.key in ended
        ]
        if starts:
            self._start(w, spec, reps, starts)
        self._autoscale(w, spec, reps)
        self._conclude(w, spec, self.store.replicas(w.id), p.given_up)

    def request(self, w: Workload, spec: InferenceSpec, rep: Replica) -> LaunchRequest:
        """The gang's launch request (env, ports, resources, a ``file://`` model's folder bound
        read-only: ``Supervisor.mounts``), as a one-replica gang."""
        return self.sup.gangs.request(w, spec, rep, [rep])

    # -- ends ----------------------------------------------------------------------------------------
    def _record_ends(self, w: Workload, spec: InferenceSpec, reps: list[Replica]) -> None:
        """Write each ended replica's event once (after its last log lines), then drop its container."""
        ended = self._ended[w.id]
        slots = slots_of(reps)
        for rep in reps:
            lost = rep.state == ReplicaState.LOST.value  # nothing more to read from a vanished node
            if rep.finished_at is None or rep.key in ended or not (lost or self.driver.logs_done(rep)):
                continue
            message = f"{ENDED}{rep.key} on {rep.node} {describe_end(rep)}"
            if rep.key in self._retiring:
                message += " (retired)"
            elif counts_as_failure(rep):
                streak, allowed = slots[rep.index].streak, spec.retries.max_attempts
                if streak >= allowed:
                    message += f"; giving up on slot {rep.index} after {streak} failures in a row without serving"
                else:
                    message += (
                        f"; failure {streak} of {allowed} in a row, next try in "
                        f"{spec.retries.delay_before(streak + 1):g}s"
                    )
            else:
                message += "; replacing it"
            self.store.add_event(
                w.id,
                w.state,
                message,
                kind=EventKind.REPLICA_ENDED,
                data={"key": rep.key, "node": rep.node, "state": rep.state},
            )
            log.info("%s: %s", w.id, message)
            ended.add(rep.key)
            self.driver.forget(rep, remove=True)
            if self._retiring.pop(rep.key, None) is not None:
                self._publish()

    def _retire(self, w: Workload, rep: Replica, why: str) -> None:
        if rep.key in self._retiring:
            return
        self._retiring[rep.key] = time.monotonic()
        self._publish()
        self.store.add_event(
            w.id,
            w.state,
            f"retiring {rep.key} on {rep.node}: {why}",
            kind=EventKind.REPLICA_RETIRING,
            data={"key": rep.key, "node": rep.node},
        )
        log.info("%s: retiring %s: %s", w.id, rep.key, why)

    def _publish(self) -> None:
        self.unroutable = frozenset(self._retiring)

    # -- starting new replicas -----------------------------------------------------------------------
    def _start(self, w: Workload, spec: InferenceSpec, reps: list[Replica], starts: list[tuple[int, str]]) -> None:
        if time.monotonic() < self._place_at.get(w.id, 0.0):
            return
        placing = self.sup.placing
        loads = placing.loads(self.store.active_replicas(), self.sup.demand)
        placer = ServicePlacer(NodeTable(placing.rows(), loads), placing.config.policy, regions=placing.regions)
        tenant = placing.tenant(w.tenant_id)
        demand = Demand.from_spec(spec, replicas=1)
        beside = [r.node for r in reps if r.finished_at is None]
        slots = slots_of(reps)
        for index, why in starts:
            slot = slots.get(index, Slot(index))
            key = replica_key(w.id, index, slot.next_attempt)
            # Away from the service's other replicas, and from where this slot's last replica just
            # died when another node has room (it may be the node's fault).
            last = slot.last_end
            avoid = beside + ([last.node] if last is not None and not slot.live else [])
            decision = placer.decide_beside(demand, tenant, avoid, commit=False)
            self._record_decision(w, key, decision, placer, demand, tenant)
            if not decision.placed:
                message = f"{key}: waiting for a node: {decision.message}"
                if self._refused.get(w.id) != message:
                    self._refused[w.id] = message
                    self.store.add_event(w.id, w.state, message, kind=EventKind.WAITING, data={"key": key})
                self._place_at[w.id] = time.monotonic() + PLACE_RETRY_S
                return
            placer.commit(decision.nodes, demand)
            node = decision.nodes[0]
            self.store.add_replica(
                key=key,
                workload_id=w.id,
                index=index,
                attempt=int(key.rsplit("-a", 1)[1]),
                node=node,
                state=ReplicaState.STARTING.value,
                **placing.terms(placer, node, demand),
            )
            self._refused.pop(w.id, None)
            note = decision.message.removeprefix(f"placed on {node}")
            self.store.add_event(
                w.id,
                w.state,
                f"starting {key} on {node}{note}: {why}",
                kind=EventKind.REPLICA_STARTING,
                data={"key": key, "node": node},
            )
            log.info("%s: starting %s on %s: %s", w.id, key, node, why)
            beside.append(node)
            rep = self.store.get_replica(key)
            self.driver.drive(w, rep, lambda r=rep: self.request(w, spec, r), stop=False)

    def _record_decision(
        self, w: Workload, key: str, decision: Decision, placer: ServicePlacer, demand: Demand, tenant: Any
    ) -> None:
        """Audit and keep the candidate table (``runner explain``), as Placing does for a gang;
        a refusal only when its reason is new."""
        if not decision.placed and self._refused.get(w.id, "").endswith(decision.message):
            return
        rows = [asdict(r) for r in placer.explain(demand, tenant, decision.nodes)[:EXPLAIN_ROWS]]
        attempt = int(key.rsplit("-a", 1)[1])
        with self.store.session() as s:
            self.store.append_audit(
                s,
                "placement",
                {
                    "workload": w.id,
                    "tenant": w.tenant_id,
                    "replica": key,
                    "attempt": attempt,
                    "placed": decision.placed,
                    "nodes": list(decision.nodes),
                    "message": decision.message,
                    "counts": {r.name.lower(): n for r, n in decision.counts.items()},
                },
            )
        self.store.record_placement(
            workload_id=w.id,
            attempt=attempt,
            placed=decision.placed,
            nodes=list(decision.nodes),
            message=decision.message,
            rows=rows,
            total_nodes=decision.total_nodes,
        )

    def _leaving_nodes(self) -> set[str]:
        """Draining or suspended nodes (read at most every 0.5 s across services)."""
        at, nodes = self._leaving
        if time.monotonic() - at > 0.5:
            nodes = {
                n.name
                for n in self.store.registry()
                if n.state in (NodeState.DRAINING.value, NodeState.SUSPENDED.value)
            }
            self._leaving = (time.monotonic(), nodes)
        return nodes

    # -- size ----------------------------------------------------------------------------------------
    def _autoscale(self, w: Workload, spec: InferenceSpec, reps: list[Replica]) -> None:
        scaler = self._scalers.get(w.id)
        if scaler is None:
            scaler = self._scalers[w.id] = Autoscaler(Policy.from_spec(spec))
        samples = [
            Sample.from_report({**r.reports["metrics"]}) for r in reps if serves(r) and "metrics" in (r.reports or {})
        ]
        decision = scaler.observe(time.time(), self._desired[w.id], samples)
        if decision is None or decision.target == decision.current:
            return
        self._desired[w.id] = decision.target
        self.store.add_event(
            w.id,
            w.state,
            decision.message,
            kind=EventKind.SCALED,
            data={"from": decision.current, "to": decision.target},
        )
        log.info("%s: %s", w.id, decision.message)

    # -- state ---------------------------------------------------------------------------------------
    def _stop_reason(self, w: Workload, spec: InferenceSpec) -> Stop | None:
        """Why the whole service ends now (a cancel, a spent budget, a refused tenant, a timeout), or None."""
        if w.cancel_requested:
            return Stop(StopReason.CANCEL, "cancelled")
        stored = Stop.of(w)
        if stored is not None and stored.kind in (StopReason.BUDGET, StopReason.REFUSED):
            return stored
        if spec.timeout and w.started_at and time.time() - w.started_at > spec.timeout:
            return Stop(StopReason.TIMEOUT, f"timed out after {spec.timeout:g}s")
        return None

    def _stop_all(self, w: Workload, spec: InferenceSpec, reps: list[Replica], stop: Stop) -> None:
        """Stop every replica (SIGTERM: the server answers what it holds), then end the service."""
        live = [r for r in reps if r.finished_at is None]
        if any(r.key not in self._retiring for r in live):
            self._retiring.update({r.key: time.monotonic() for r in live if r.key not in self._retiring})
            self._publish()
        for rep in reps:
            if rep.finished_at is None or rep.key in self.driver.calls:
                self.driver.drive(w, rep, lambda r=rep: self.request(w, spec, r), stop=rep.finished_at is None)
        if any(r.finished_at is None or not self.driver.logs_done(r) for r in reps):
            return
        for rep in reps:
            self.driver.forget(rep, remove=True)
        if w.cancel_requested:
            self.sup.move(w, S.CANCELLED, "cancelled by the user")
        else:
            self.sup.move(w, S.FAILED, stop.message)
        self._forget(w.id)

    def _conclude(self, w: Workload, spec: InferenceSpec, reps: list[Replica], given_up: dict[int, Any]) -> None:
        live = [r for r in reps if r.finished_at is None]
        serving = [r for r in live if serves(r)]
        desired = self._desired[w.id]
        state = WorkloadState(w.state)
        if not live and given_up and len(given_up) >= desired:
            last = max(given_up.values(), key=lambda r: r.finished_at or 0.0)
            self.sup.move(
                w,
                S.FAILED,
                f"no replica could serve: each of {desired} slot(s) failed "
                f"{spec.retries.max_attempts} time(s) in a row before serving; last: "
                f"{last.key} on {last.node} {describe_end(last)}",
                exit_code=last.exit_code,
            )
            self._forget(w.id)
            return
        nodes = ", ".join(sorted({r.node for r in serving}))
        summary = f"serving on {len(serving)} of {desired} replica(s)" + (f": {nodes}" if nodes else "")
        if given_up:
            summary += f" (slot(s) {', '.join(map(str, sorted(given_up)))} given up)"
        if state == S.STARTING and serving:
            self.sup.move(w, S.RUNNING, summary, **({} if w.started_at else {"started_at": time.time()}))
        elif state == S.RUNNING and not serving:
            self.sup.move(w, S.STARTING, f"no replica serves; {len(live)} starting")
        elif state == S.RUNNING and w.message != summary:
            self.store.update_workload(w.id, message=summary)

    # -- memory --------------------------------------------------------------------------------------
    def _load(self, w: Workload, spec: InferenceSpec) -> None:
        """After a restart (or at first sight): the service's size and the ends already recorded,
        from the events' kinds and data (their messages are for people and may be reworded)."""
        if w.id in self._desired:
            return
        events = self.store.events(w.id)
        self._desired[w.id] = desired_from_events(events, spec.replicas.min, spec.replicas.max)
        self._ended[w.id] = ended_keys(events)

    def _forget(self, workload_id: str) -> None:
        for table in (self._desired, self._ended, self._scalers, self._place_at, self._refused):
            table.pop(workload_id, None)
        prefix = f"{workload_id}-"
        for key in [k for k in self._retiring if k.startswith(prefix)]:
            del self._retiring[key]
        self._publish()
