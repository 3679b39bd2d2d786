"""Sessions: a gaming workload's life, where it differs from a gang's.

A session is one replica, placed, started and supervised like a gang of one (``GangController``
does that part), but it *ends* differently:

- **By itself**: the game server exits 0 after its idle timeout or max duration. That is the
  session done: SUCCEEDED with its reason, never retried.
- **By the player**: ``runner session end`` stores an ``END`` stop (``runner.core.events``). The server
  gets SIGTERM (with the gang's 10 s grace; it needs about 2) and the session is SUCCEEDED when
  it exits 0. ``cancel`` stays what it is for every kind: stop now, CANCELLED.
- **By the runner's backstop**: a session still running ``BACKSTOP_S`` past its max duration
  (a server that ignored its own limit) is ended the same way, and says so.
- A crash (non-zero exit, a lost node) is a failure, retried as the spec's ``retries`` say.

While it runs, the controller watches what the session reports: the first ``ready`` report is
recorded once per attempt as a ``SESSION_READY`` event (``serving at URL``; it wakes anyone
waiting for the URL), and each ``metrics`` report goes to an ``SlaWatch``, whose breaches and
recoveries become events and audit entries. Both are read back from the events' kinds and data,
never their words, so a restarted control plane knows a breach is open and never reports it or
the URL twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from runner.core.events import EventKind, Stop, StopReason, data_of, of_kind
from runner.core.placement import Decision
from runner.core.sessions import SERVING, SlaChange, SlaWatch, player_url, sla_state
from runner.core.spec import GamingSpec
from runner.core.states import ReplicaState, WorkloadState
from runner.store import Replica, Workload
from runner.supervisor.gang import ACTIVE
from runner.supervisor.ports import ControllerHost

log = logging.getLogger("runner.session")
S = WorkloadState

#: How long past its max duration a session may run before the runner ends it.
BACKSTOP_S = 15.0


class SessionController:
    """A session's own ends and watching, on top of the gang mechanics it delegates to ``gang``."""

    def __init__(self, supervisor: ControllerHost) -> None:
        self.sup = supervisor
        self.store = supervisor.store
        self.driver = supervisor.driver
        #: Places, starts, drives and retries the session as a gang of one, and decides every end
        #: that is not a session's own (a cancel, a crash). The supervisor's own gang controller:
        #: it keeps no state per workload, and a second one would register the driver's report
        #: listeners (training events) twice.
        self.gang = supervisor.gangs
        #: Replica key -> its SLA judge (one per attempt; rebuilt from events after a restart).
        self._watches: dict[str, SlaWatch] = {}
        #: Replica keys whose ``serving`` event is written.
        self._announced: set[str] = set()
        #: Workloads whose past events were read into the two above.
        self._loaded: set[str] = set()

    def _spec(self, w: Workload) -> GamingSpec:
        """The workload's spec, which is a session's: the supervisor steps only those here."""
        spec = self.sup.spec(w)
        if not isinstance(spec, GamingSpec):
            raise TypeError(f"{w.id} is a {spec.kind} workload, not a gaming session")
        return spec

    # -- placing -------------------------------------------------------------------------------------
    def launch(self, w: Workload, decision: Decision, terms: list[dict[str, Any]]) -> None:
        """As a gang's launch: the replica row written, STARTING, then its first step (this one)."""
        self.step_active(self.gang.place(w, decision, terms))

    # -- stepping ------------------------------------------------------------------------------------
    def step(self, w: Workload) -> None:
        state = WorkloadState(w.state)
        if state == S.RETRYING:
            self.gang.step_retrying(w)
        elif state in ACTIVE:
            self.step_active(w)

    def step_active(self, w: Workload) -> None:
        spec = self._spec(w)
        w = self._backstop(w, spec)
        w, reps = self.gang.drive_attempt(w, spec)
        # As a gang: conclude on what is true after driving (but with a session's own ends).
        self.conclude(w, spec, reps, self.gang.stop_reason(w, spec, reps))
        w = self.store.get_workload(w.id)
        if WorkloadState(w.state).is_terminal():
            self._forget(w.id)
            return
        self._watch(w, spec, self.gang.current(w))

    def _backstop(self, w: Workload, spec: GamingSpec) -> Workload:
        """End a session that outlived its max duration (the server should have ended it)."""
        if w.stop_kind or w.cancel_requested or not w.started_at or not spec.max_duration:
            return w
        ran = time.time() - w.started_at
        if ran <= spec.max_duration + BACKSTOP_S:
            return w
        stop = Stop(
            StopReason.END,
            f"max duration {spec.max_duration:g}s passed {ran - spec.max_duration:.0f}s ago (runner backstop)",
            {"by": "backstop"},
        )
        self.store.update_workload(w.id, **stop.fields())
        self.store.add_event(
            w.id, w.state, f"stopping: {stop.detail}", kind=EventKind.STOPPING, data={"stop": stop.kind.value}
        )
        log.info("%s: %s", w.id, stop.message)
        return self.store.get_workload(w.id)

    # -- ending --------------------------------------------------------------------------------------
    def conclude(self, w: Workload, spec: GamingSpec, reps: list[Replica], stop: Stop | None) -> None:
        """A session's own ends (by itself, by the player, by the backstop); any other end (a
        cancel, a crash) is the gang's to conclude."""
        ending = stop is not None and stop.kind is StopReason.END
        natural = stop is None and bool(reps) and all(r.finished_at is not None and r.exit_code == 0 for r in reps)
        if not (ending or natural) or w.cancel_requested:
            self.gang.conclude(w, spec, reps, stop)
            return
        if not all(r.finished_at is not None for r in reps) or not all(self.driver.logs_done(r) for r in reps):
            return
        for r in reps:
            self.driver.forget(r, remove=True)
        exit_code = next((r.exit_code for r in reps if r.exit_code not in (0, None)), reps[0].exit_code)
        told = (reps[0].reports or {}).get("session") or {}
        said = told.get("reason") if told.get("event") == "ended" else None
        if exit_code == 0:
            why = stop.detail if ending and stop else (said or "exited 0")
            self.sup.move(
                w, S.SUCCEEDED, f"session ended: {why}" + (f" ({said})" if ending and said else ""), exit_code=0
            )
        else:  # asked to end, it did not end cleanly (killed after the grace, or crashed on the way out)
            self.sup.move(
                w,
                S.FAILED,
                f"session did not end cleanly: exit code {exit_code} after '{stop.detail if stop else 'end'}'",
                exit_code=exit_code,
            )

    # -- watching ------------------------------------------------------------------------------------
    def _watch(self, w: Workload, spec: GamingSpec, reps: list[Replica]) -> None:
        self._load(w)
        for rep in reps:
            if rep.state != ReplicaState.RUNNING.value or rep.finished_at is not None:
                continue
            reports = rep.reports or {}
            if rep.key not in self._announced and (reports.get("session") or {}).get("event") == "ready":
                self._announce(w, rep, spec)
            metrics = reports.get("metrics")
            if metrics and not metrics.get("final"):
                watch = self._watches.setdefault(rep.key, SlaWatch(spec.fps, spec.latency_budget_ms))
                change = watch.observe(float(metrics.get("uptime_s") or metrics.get("ts") or 0.0), metrics)
                if change is not None:
                    self._record(w, rep, change)

    def _announce(self, w: Workload, rep: Replica, spec: GamingSpec) -> None:
        node = self.sup.cluster.nodes.get(rep.node)
        port = next((p.container for p in spec.ports if p.protocol == "tcp"), 8000)
        url = player_url(rep.ports, port, node_address=node.address if node else "")
        ready_s = ((rep.reports or {}).get("session") or {}).get("ready_s")
        self.store.add_event(
            w.id,
            w.state,
            f"{SERVING}{url} (attempt {rep.attempt}, node {rep.node}"
            + (f", server ready in {ready_s}s)" if ready_s is not None else ")"),
            kind=EventKind.SESSION_READY,
            data={"key": rep.key, "attempt": rep.attempt, "node": rep.node, "url": url},
        )
        self._announced.add(rep.key)
        with self.sup.changed:
            self.sup.changed.notify_all()

    def _record(self, w: Workload, rep: Replica, change: SlaChange) -> None:
        self.store.add_event(
            w.id, w.state, change.message, kind=change.event_kind, data={"key": rep.key, "detail": change.detail}
        )
        self.store.audit(
            f"session.sla_{change.kind}",
            {
                "workload": w.id,
                "tenant": w.tenant_id,
                "replica": rep.key,
                "node": rep.node,
                "provider": rep.provider_id,
                "detail": change.detail,
            },
        )
        log.warning("%s on %s: %s", w.id, rep.node, change.message)
        with self.sup.changed:
            self.sup.changed.notify_all()

    def _load(self, w: Workload) -> None:
        """After a restart: which attempts already announced, and whether a breach is open (from
        the events' kinds and data: their words are for people)."""
        if w.id in self._loaded:
            return
        self._loaded.add(w.id)
        events = self.store.events(w.id)
        announced = {data_of(e).get("attempt") for e in of_kind(events, EventKind.SESSION_READY)}
        for rep in self.gang.current(w):
            if rep.attempt in announced:
                self._announced.add(rep.key)
        if sla_state(events)["state"] == "breached":
            spec = self._spec(w)
            for rep in self.gang.current(w):
                self._watches[rep.key] = SlaWatch(spec.fps, spec.latency_budget_ms, breached=True)

    def _forget(self, workload_id: str) -> None:
        self._loaded.discard(workload_id)
        prefix = f"{workload_id}-"
        for key in [k for k in self._watches if k.startswith(prefix)]:
            del self._watches[key]
        self._announced = {k for k in self._announced if not k.startswith(prefix)}
