"""The supervisor: drives every workload through its states. One loop, never blocked on a node.

Each call to a node agent is an in-flight Ray ``ObjectRef`` (start, wait, logs, stop); the loop
wakes when a submit arrives, when any call completes, or after a short poll, and then moves each
workload on by what it knows. Because a replica row is written before its agent is asked to
start it, and ``start`` adopts an existing container of the same key, a restarted supervisor
simply asks again: what runs is re-adopted, nothing is started twice.

An attempt is a gang: all replicas of a workload are placed and started together; the attempt
succeeds when all exit 0, and fails (stopping the rest) when any fails or its node vanishes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from runner import cluster
from runner.agent import get_or_create_agent
from runner.nodes import NodeInfo
from runner.placement import Demand, Load, place
from runner.runtime import LaunchRequest, ReplicaStatus, replica_key
from runner.settings import Settings
from runner.spec import parse_workload, spec_gpu_count
from runner.states import ReplicaState, WorkloadState
from runner.store import Replica, Store, Workload

log = logging.getLogger("runner.supervisor")
S = WorkloadState

WAIT_CALL_S = 20.0  # one agent.wait call; re-issued while the replica runs
STOP_GRACE_S = 10.0
NODE_REFRESH_S = 1.0
RECONCILE_S = 30.0  # how often each node's replicas are compared with the store


def replica_count(spec: Any) -> int:
    """How many replicas one attempt of this workload runs."""
    kind = spec.kind
    if kind == "training":
        return spec.workers
    if kind == "inference":
        return spec.replicas.min
    if kind == "batch":
        return spec.replicas
    return 1


@dataclass
class _Calls:
    """In-flight agent calls of one replica (at most one of each)."""

    start: Any = None
    wait: Any = None
    logs: Any = None
    stop: Any = None
    logs_at: float = 0.0
    final_logs_done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def refs(self) -> list[Any]:
        return [r for r in (self.start, self.wait, self.logs, self.stop) if r is not None]


class Supervisor:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.nodes: dict[str, NodeInfo] = {}
        self.agents: dict[str, Any] = {}
        self.calls: dict[str, _Calls] = {}
        #: In-flight ``agent.list()`` per node, and when each node was last reconciled.
        self.reconciles: dict[str, Any] = {}
        self._reconciled_at: dict[str, float] = {}
        self._nodes_at = 0.0
        self._wake = threading.Event()
        #: Notified after every state change, for API long-polls (``--wait``).
        self.changed = threading.Condition()

    # -- loop ------------------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a bug in one tick must not end supervision
                log.exception("supervisor tick failed")
            self._idle(self.settings.poll_interval_s)

    def _idle(self, timeout_s: float) -> None:
        """Sleep until woken, until an agent call completes, or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._wake.is_set():
                break
            refs = [r for c in self.calls.values() for r in c.refs()] + list(self.reconciles.values())
            if refs:
                ready, _ = ray.wait(refs, num_returns=1, timeout=0.02)
                if ready:
                    break
            else:
                self._wake.wait(0.02)
        self._wake.clear()

    def tick(self) -> None:
        self.refresh_nodes()
        for workload in self.store.active_workloads():
            self._step(workload)
        self._reconcile()

    # -- nodes -----------------------------------------------------------------------------------
    def refresh_nodes(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._nodes_at < NODE_REFRESH_S:
            return
        self._nodes_at = time.monotonic()
        self.nodes = {n.name: n for n in cluster.list_nodes()}
        for name, node in self.nodes.items():
            if node.alive and name not in self.agents:
                try:
                    self.agents[name] = get_or_create_agent(
                        name, runtime=self.settings.runtime, state_dir=self.settings.replicas_dir,
                        workdir=self.settings.workdir,
                    )  # fmt: skip
                except Exception:  # one node's agent must not stop the others; retried next refresh
                    log.exception("cannot create the agent on %s", name)
            elif not node.alive:
                self.agents.pop(name, None)
                self._reconciled_at.pop(name, None)  # when it comes back, reconcile at once

    def _reconcile(self) -> None:
        """Remove replicas a node runs that the store does not expect (orphans).

        A node that vanished and came back may still run the replica that was given up on
        and started elsewhere; a crash may leave a finished replica's container behind. The
        store is the truth: a key that is not an active, unfinished replica is stopped.
        """
        for node, ref in list(self.reconciles.items()):
            if not ray.wait([ref], timeout=0)[0]:
                continue
            del self.reconciles[node]
            try:
                statuses: list[ReplicaStatus] = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                continue
            expected = {r.key for r in self.store.active_replicas() if r.finished_at is None}
            agent = self.agents.get(node)
            for status in statuses:
                if status.key not in expected and status.key not in self.calls and agent is not None:
                    log.warning("removing orphan replica %s on %s (%s)", status.key, node, status.state)
                    agent.remove.remote(status.key)
        now = time.monotonic()
        for node, agent in self.agents.items():
            if node not in self.reconciles and now - self._reconciled_at.get(node, -RECONCILE_S) >= RECONCILE_S:
                self._reconciled_at[node] = now
                self.reconciles[node] = agent.list.remote()

    def _loads(self) -> dict[str, Load]:
        loads: dict[str, Load] = {}
        specs: dict[str, Any] = {}
        for rep in self.store.active_replicas():
            if rep.workload_id not in specs:
                specs[rep.workload_id] = self._spec(self.store.get_workload(rep.workload_id))
            loads[rep.node] = loads.get(rep.node, Load()).plus(Demand.from_spec(specs[rep.workload_id]))
        return loads

    # -- per workload ------------------------------------------------------------------------------
    @staticmethod
    def _spec(w: Workload) -> Any:
        return parse_workload(w.spec, source=w.source or w.id)

    def _move(self, w: Workload, target: WorkloadState, message: str = "", **fields: Any) -> Workload:
        row = self.store.transition(w.id, target, message, **fields)
        log.info("%s %s -> %s %s", w.id, w.state, target, message)
        with self.changed:
            self.changed.notify_all()
        return row

    def _step(self, w: Workload) -> None:
        state = WorkloadState(w.state)
        if state == S.PENDING:
            self._step_pending(w)
        elif state == S.RETRYING:
            if w.cancel_requested:
                self._move(w, S.CANCELLED, "cancelled while waiting to retry")
            elif time.time() >= w.next_attempt_at:
                self._move(w, S.PENDING, f"attempt {w.attempts + 1} of {self._spec(w).retries.max_attempts}")
                self.wake()
        elif state in (S.PLACED, S.STARTING, S.RUNNING):
            self._step_active(w)

    def _step_pending(self, w: Workload) -> None:
        if w.cancel_requested:
            self._move(w, S.CANCELLED, "cancelled before placement")
            return
        spec = self._spec(w)
        demand = Demand.from_spec(spec)
        loads = self._loads()
        chosen: list[str] = []
        for _ in range(replica_count(spec)):
            decision = place(demand, self.nodes.values(), loads)
            if decision.node is None:
                summary = decision.summary()
                if summary != w.message:  # record each new reason once, not every tick
                    self.store.update_workload(w.id, message=summary)
                    self.store.add_event(w.id, S.PENDING.value, summary)
                return
            chosen.append(decision.node)
            loads[decision.node] = loads.get(decision.node, Load()).plus(demand)
        attempt = w.attempts + 1
        for index, node in enumerate(chosen):
            self.store.add_replica(
                key=replica_key(w.id, index, attempt), workload_id=w.id, index=index, attempt=attempt,
                node=node, state=ReplicaState.STARTING.value,
            )  # fmt: skip
        w = self._move(w, S.PLACED, f"attempt {attempt} placed on {', '.join(chosen)}", attempts=attempt, node=chosen[0])
        w = self._move(w, S.STARTING, "starting")
        self._step_active(w)

    def _request(self, w: Workload, spec: Any, rep: Replica) -> LaunchRequest:
        node = self.nodes.get(rep.node)
        env = {
            **spec.env,
            "RUNNER_WORKLOAD_ID": w.id,
            "RUNNER_REPLICA_INDEX": str(rep.index),
            "RUNNER_ATTEMPT": str(rep.attempt),
            "RUNNER_NODE": rep.node,
        }
        return LaunchRequest(
            key=rep.key, workload_id=w.id, replica_index=rep.index, attempt=rep.attempt, node=rep.node,
            image=spec.image, command=list(spec.command), env=env, cpu=spec.resources.cpu,
            memory_mb=spec.resources.memory, gpus=spec_gpu_count(spec),
            real_gpus=bool(node and not node.simulated and node.gpu_model),
            ports=[(p.container, p.protocol) for p in spec.ports],
        )  # fmt: skip

    def _step_active(self, w: Workload) -> None:
        spec = self._spec(w)
        reps = [r for r in self.store.replicas(w.id) if r.attempt == w.attempts]
        if WorkloadState(w.state) == S.PLACED:
            w = self._move(w, S.STARTING, "starting")
        for rep in reps:
            self._collect(w, rep)
        reps = [r for r in self.store.replicas(w.id) if r.attempt == w.attempts]
        stopping_reason = self._stop_reason(w, spec, reps)
        for rep in reps:
            self._drive(w, spec, rep, stopping=stopping_reason is not None)
        # _drive may have just found a replica's node gone: conclude on what is true now.
        stopping_reason = stopping_reason or self._stop_reason(w, spec, reps)
        self._conclude(w, spec, reps, stopping_reason)

    def _stop_reason(self, w: Workload, spec: Any, reps: list[Replica]) -> str | None:
        if w.cancel_requested:
            return "cancelled"
        if spec.timeout and w.started_at and time.time() - w.started_at > spec.timeout:
            return f"timed out after {spec.timeout:g}s"
        failed = [r for r in reps if r.finished_at and (r.exit_code != 0 or r.state == ReplicaState.LOST.value)]
        if failed:
            return _describe_failure(failed[0])
        return None

    def _drive(self, w: Workload, spec: Any, rep: Replica, *, stopping: bool) -> None:
        """Make sure the right agent call is in flight for this replica."""
        calls = self.calls.setdefault(rep.key, _Calls())
        node = self.nodes.get(rep.node)
        if rep.finished_at is None and (node is None or not node.alive):
            self._finish_replica(w, rep, ReplicaStatus(key=rep.key, state=ReplicaState.LOST, error=f"node {rep.node} is gone"))
            calls.final_logs_done = True
            return
        agent = self.agents.get(rep.node)
        if agent is None:  # the node is up but its agent is not (yet): refresh_nodes retries
            return
        if rep.finished_at is None:
            if stopping and calls.stop is None:
                calls.stop = agent.stop.remote(rep.key, 0 if w.cancel_requested else STOP_GRACE_S)
            elif rep.state == ReplicaState.STARTING.value and calls.start is None:
                calls.start = agent.start.remote(self._request(w, spec, rep))
            elif rep.state == ReplicaState.RUNNING.value and calls.wait is None:
                calls.wait = agent.wait.remote(rep.key, WAIT_CALL_S)
        due = time.monotonic() - calls.logs_at >= self.settings.poll_interval_s or rep.finished_at is not None
        if calls.logs is None and not calls.final_logs_done and rep.state != ReplicaState.STARTING.value and due:
            calls.extra["final"] = rep.finished_at is not None
            calls.logs = agent.logs.remote(rep.key, rep.log_lines)
            calls.logs_at = time.monotonic()

    def _collect(self, w: Workload, rep: Replica) -> None:
        """Take in the results of this replica's agent calls that have completed."""
        calls = self.calls.get(rep.key)
        if calls is None:
            return
        for name in ("start", "wait", "stop", "logs"):
            ref = getattr(calls, name)
            if ref is None or not ray.wait([ref], timeout=0)[0]:
                continue
            setattr(calls, name, None)
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                log.warning("%s: agent on %s unreachable: %s", rep.key, rep.node, exc.__class__.__name__)
                self.refresh_nodes(force=True)
                continue
            if name == "logs":
                rep.log_lines = self.store.append_logs(
                    workload_id=w.id, replica_key=rep.key, start_seq=rep.log_lines, lines=result
                )
                if calls.extra.get("final"):
                    calls.final_logs_done = True
            else:
                self._apply(w, rep, result)

    def _apply(self, w: Workload, rep: Replica, status: ReplicaStatus) -> None:
        if status.state.is_terminal():
            self._finish_replica(w, rep, status)
        elif status.state == ReplicaState.RUNNING and rep.state != ReplicaState.RUNNING.value:
            self.store.update_replica(rep.key, state=ReplicaState.RUNNING.value, handle=status.handle,
                                      started_at=status.started_at or time.time())  # fmt: skip
            rep.state = ReplicaState.RUNNING.value

    def _finish_replica(self, w: Workload, rep: Replica, status: ReplicaStatus) -> None:
        if rep.finished_at is not None:
            return
        now = time.time()
        self.store.update_replica(
            rep.key, state=status.state.value, exit_code=status.exit_code, error=status.error,
            finished_at=status.finished_at or now, handle=status.handle or rep.handle,
        )  # fmt: skip
        rep.state, rep.exit_code, rep.error, rep.finished_at = status.state.value, status.exit_code, status.error, now

    def _conclude(self, w: Workload, spec: Any, reps: list[Replica], stopping_reason: str | None) -> None:
        """Move the workload on once its replicas say so."""
        all_running = reps and all(r.state == ReplicaState.RUNNING.value for r in reps)
        if WorkloadState(w.state) == S.STARTING and all_running and stopping_reason is None:
            started = min(r.started_at or time.time() for r in reps)
            self._move(w, S.RUNNING, f"running on {', '.join(sorted({r.node for r in reps}))}", started_at=started)
            return
        if not reps or not all(r.finished_at is not None for r in reps):
            return
        if not all(self.calls.get(r.key, _Calls(final_logs_done=True)).final_logs_done for r in reps):
            return  # wait for the last log lines before the end is announced
        for r in reps:
            self.calls.pop(r.key, None)
            agent = self.agents.get(r.node)
            if agent is not None and r.state != ReplicaState.LOST.value:
                agent.remove.remote(r.key)  # the logs are in the store now
        exit_code = next((r.exit_code for r in reps if r.exit_code not in (0, None)), reps[0].exit_code)
        if w.cancel_requested:
            self._move(w, S.CANCELLED, "cancelled by the user", exit_code=exit_code)
        elif stopping_reason is None:
            self._move(w, S.SUCCEEDED, "all replicas exited 0", exit_code=0)
        elif stopping_reason.startswith("timed out"):
            self._move(w, S.FAILED, stopping_reason, exit_code=exit_code)
        elif w.attempts < spec.retries.max_attempts:
            delay = spec.retries.delay_before(w.attempts + 1)
            self._move(w, S.RETRYING, f"attempt {w.attempts} failed: {stopping_reason}; retrying in {delay:g}s",
                       exit_code=exit_code, next_attempt_at=time.time() + delay)  # fmt: skip
        else:
            self._move(w, S.FAILED, f"attempt {w.attempts} of {spec.retries.max_attempts} failed: {stopping_reason}",
                       exit_code=exit_code)  # fmt: skip


def _describe_failure(rep: Replica) -> str:
    if rep.state == ReplicaState.LOST.value:
        return f"replica {rep.index} lost on {rep.node}: {rep.error}"
    detail = f" ({rep.error})" if rep.error else ""
    return f"replica {rep.index} on {rep.node} exited with code {rep.exit_code}{detail}"
