"""Gangs: workloads whose attempt is all of its replicas together (batch jobs, training jobs).

An attempt is placed whole or not at all, started together, and ends together: it succeeds when
every replica exits 0; when one fails, or its node vanishes, the rest are stopped (SIGTERM first,
so a training job checkpoints) and the whole gang is retried, from its last checkpoint where it
has one. The runner can also end an attempt on purpose (a ``runner.core.events.Stop`` stored on the
workload): to move work off a draining node or a preempted slot (a *relocation*: retried at once
and not counted as a failure), or because the tenant's budget is spent (failed, not retried).
What is decided reads the stop's kind, never its words.

    PENDING -> PLACED -> STARTING -> RUNNING -> SUCCEEDED
                  └──────────┴──────────┴──> RETRYING -> PENDING   (attempts or relocation left)
                                         └──> FAILED                (none left, budget, timeout)
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeAlias

from runner.core import training
from runner.core.contract import Rendezvous, base_env, kind_env, memory_limit_mb
from runner.core.events import NO_STOP, EventKind, Stop, StopReason
from runner.core.mounts import to_container
from runner.core.placement import Decision
from runner.core.spec import AnySpec, BatchSpec, GamingSpec, InferenceSpec, TrainingSpec, spec_gpu_count
from runner.core.states import ReplicaState, WorkloadState
from runner.core.training import master_port
from runner.runtime import LaunchRequest, replica_key
from runner.store import Replica, Workload
from runner.supervisor.ports import ControllerHost
from runner.supervisor.training_events import TrainingEvents

log = logging.getLogger("runner.gang")
S = WorkloadState

#: The kinds that run as gangs: batch and training jobs, and a gaming session (a gang of one, whose
#: ``SessionController`` ends it its own way). An inference service never does: its replicas are
#: independent (``ServiceController``), though it builds its launch requests with ``request``.
GangSpec: TypeAlias = BatchSpec | TrainingSpec | GamingSpec
#: The states in which an attempt's replicas are driven.
ACTIVE = (S.PLACED, S.STARTING, S.RUNNING)


class GangController:
    """Steps gangs. It keeps no state of its own per workload (the store holds it all), so the one
    the supervisor builds serves every gang, sessions' included."""

    def __init__(self, supervisor: ControllerHost) -> None:
        self.sup = supervisor
        self.store = supervisor.store
        self.driver = supervisor.driver
        self.driver.report_listeners.append(TrainingEvents(self.store))

    def spec_of(self, w: Workload) -> GangSpec:
        """The workload's spec, which is a gang's: the supervisor steps only those kinds here."""
        spec = self.sup.spec(w)
        if isinstance(spec, InferenceSpec):
            raise TypeError(f"{w.id} is an inference service, not a gang")
        return spec

    # -- placing -----------------------------------------------------------------------------------------
    def launch(self, w: Workload, decision: Decision, terms: list[dict[str, Any]]) -> None:
        """Write the attempt's replica rows (before anything starts), then move to STARTING."""
        self.step_active(self.place(w, decision, terms))

    def place(self, w: Workload, decision: Decision, terms: list[dict[str, Any]]) -> Workload:
        """``launch`` up to the first step: the replica rows written, the workload STARTING."""
        attempt = w.attempts + 1
        for index, (node, term) in enumerate(zip(decision.nodes, terms)):
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
            f"attempt {attempt} placed on {', '.join(decision.nodes)}",
            attempts=attempt,
            node=decision.nodes[0],
            **NO_STOP,
        )
        return self.sup.move(w, S.STARTING, "starting")

    # -- stepping ----------------------------------------------------------------------------------------
    def step(self, w: Workload) -> None:
        state = WorkloadState(w.state)
        if state == S.RETRYING:
            self.step_retrying(w)
        elif state in ACTIVE:
            self.step_active(w)

    def step_retrying(self, w: Workload) -> None:
        """A RETRYING gang: cancelled, or PENDING again once its backoff has passed."""
        if w.cancel_requested:
            self.sup.move(w, S.CANCELLED, "cancelled while waiting to retry")
        elif time.time() >= w.next_attempt_at:
            spec = self.sup.spec(w)
            self.sup.move(
                w,
                S.PENDING,
                f"attempt {w.attempts + 1} (failed {w.attempts - w.relocations} of {spec.retries.max_attempts})",
            )
            self.sup.wake()

    def current(self, w: Workload) -> list[Replica]:
        return [r for r in self.store.replicas(w.id) if r.attempt == w.attempts]

    def step_active(self, w: Workload) -> None:
        spec = self.spec_of(w)
        w, reps = self.drive_attempt(w, spec)
        # ``drive`` may have just found a replica's node gone: conclude on what is true now (and
        # name that lost node, the cause, rather than the peers that failed because of it).
        self.conclude(w, spec, reps, self.stop_reason(w, spec, reps))

    def drive_attempt(self, w: Workload, spec: GangSpec) -> tuple[Workload, list[Replica]]:
        """One step of an active attempt short of its conclusion: take in the agents' answers and
        drive every replica (start, wait, logs; stop them when the attempt ends). The workload and
        its replicas as they are now."""
        if WorkloadState(w.state) == S.PLACED:
            w = self.sup.move(w, S.STARTING, "starting")
        for rep in self.current(w):
            self.driver.collect(w, rep)
        reps = self.current(w)
        if spec.kind == "training":
            w = self.relocate_on_port_clash(w, reps)
        reason = self.stop_reason(w, spec, reps)
        grace = training.stop_grace(reps, 10.0) if spec.kind == "training" else 10.0
        for rep in reps:
            self.driver.drive(
                w,
                rep,
                lambda r=rep: self.request(w, spec, r, reps),
                stop=reason is not None,
                grace_s=0 if w.cancel_requested else grace,
            )
        return w, reps

    def stop_reason(self, w: Workload, spec: GangSpec, reps: list[Replica]) -> Stop | None:
        """Why the attempt ends now, or None while it may go on: a cancel, the stored stop, a
        timeout, or a replica's failure."""
        if w.cancel_requested:
            return Stop(StopReason.CANCEL, "cancelled")
        stored = Stop.of(w)
        if stored is not None:
            return stored
        if spec.timeout and w.started_at and time.time() - w.started_at > spec.timeout:
            return Stop(StopReason.TIMEOUT, f"timed out after {spec.timeout:g}s")
        failed = [r for r in reps if r.finished_at and (r.exit_code != 0 or r.state == ReplicaState.LOST.value)]
        # The cause, not its echoes: a lost node before the peers it took down, then the first to end.
        failed.sort(key=lambda r: (r.state != ReplicaState.LOST.value, r.finished_at or 0.0, r.index))
        return Stop(StopReason.FAILURE, describe_failure(failed[0])) if failed else None

    def relocate_on_port_clash(self, w: Workload, reps: list[Replica]) -> Workload:
        """A training attempt whose rendezvous port was taken never trained: end it as a
        relocation (placed again at once, with the next attempt's port; not a failure)."""
        clash = training.port_clash(reps)
        if clash is None or w.stop_kind or w.cancel_requested:
            return w
        stop = Stop(StopReason.RELOCATE, f"rendezvous port in use on {clash.node}", {"node": clash.node})
        self.store.update_workload(w.id, **stop.fields())
        self.store.add_event(
            w.id, w.state, f"stopping: {clash.error}", kind=EventKind.STOPPING, data={"stop": stop.kind.value}
        )
        return self.store.get_workload(w.id)

    def request(self, w: Workload, spec: AnySpec, rep: Replica, gang: list[Replica]) -> LaunchRequest:
        node = self.sup.cluster.nodes.get(rep.node)
        rendezvous = None
        if spec.kind == "training":
            rank0 = next(r for r in gang if r.index == 0)
            master = self.sup.cluster.nodes.get(rank0.node)
            rendezvous = Rendezvous(
                master_addr=master.address if master else "127.0.0.1",
                master_port=master_port(w.id, rep.attempt),
                world_size=len(gang),
            )
        mounts = self.sup.mounts(w, spec)  # the replica is told where it finds them
        checkpoint_uri = to_container(self.sup.checkpoint_uri(w, spec), mounts) if spec.kind == "training" else None
        model_uri = to_container(spec.model, mounts) if isinstance(spec, InferenceSpec) and spec.model else None
        store_env = self.sup.store_env(w, spec, rep.attempt)  # its own credential for the network store
        env = {
            **spec.env,
            **self.sup.secret_env(w, spec),  # (the runner's own variables below still win)
            **store_env,
            **kind_env(
                spec, replica_index=rep.index, rendezvous=rendezvous, checkpoint_uri=checkpoint_uri, model_uri=model_uri
            ),
            **base_env(w.id, rep.index, rep.attempt, rep.node),
        }
        fields: dict[str, Any] = {"ports": [(p.container, p.protocol) for p in spec.ports], "mounts": mounts}
        if spec.kind == "training":  # host networking, rank 0's ports
            fields.update(training.launch_fields(spec, rep))
        return LaunchRequest(
            key=rep.key,
            workload_id=w.id,
            replica_index=rep.index,
            attempt=rep.attempt,
            node=rep.node,
            image=spec.image,
            image_digest=self.sup.image_digest(spec.image),
            command=list(spec.command),
            env=env,
            cpu=spec.resources.cpu,
            memory_mb=memory_limit_mb(spec),
            gpus=spec_gpu_count(spec),
            real_gpus=bool(node and not node.simulated and node.gpu_model),
            **fields,
        )

    # -- ending ------------------------------------------------------------------------------------------
    def conclude(self, w: Workload, spec: GangSpec, reps: list[Replica], stop: Stop | None) -> None:
        """Move the workload on once its replicas say so; ``stop``: why the attempt ends, if it does."""
        all_running = reps and all(r.state == ReplicaState.RUNNING.value for r in reps)
        if WorkloadState(w.state) == S.STARTING and all_running and stop is None:
            started = min(r.started_at or time.time() for r in reps)
            self.sup.move(w, S.RUNNING, f"running on {', '.join(sorted({r.node for r in reps}))}", started_at=started)
            return
        if not reps or not all(r.finished_at is not None for r in reps):
            return
        if not all(self.driver.logs_done(r) for r in reps):
            return  # wait for the last log lines before the end is announced
        for r in reps:
            self.driver.forget(r, remove=True)
        exit_code = next((r.exit_code for r in reps if r.exit_code not in (0, None)), reps[0].exit_code)
        failed = w.attempts - w.relocations
        if w.cancel_requested:
            self.sup.move(w, S.CANCELLED, "cancelled by the user", exit_code=exit_code)
        elif stop is None:
            self.sup.move(w, S.SUCCEEDED, "all replicas exited 0", exit_code=0)
        elif stop.kind is StopReason.RELOCATE:
            self.sup.move(
                w,
                S.RETRYING,
                f"attempt {w.attempts} ended to {stop.detail}; placing again",
                exit_code=exit_code,
                next_attempt_at=time.time(),
                relocations=w.relocations + 1,
                **NO_STOP,
            )
        elif stop.kind in (StopReason.BUDGET, StopReason.REFUSED, StopReason.TIMEOUT):
            self.sup.move(w, S.FAILED, stop.message, exit_code=exit_code)
        elif spec.kind == "training" and (final := training.final_failure(reps)):
            self.sup.move(w, S.FAILED, f"attempt {w.attempts} failed: {final}", exit_code=exit_code)
        elif failed < spec.retries.max_attempts:
            delay = spec.retries.delay_before(failed + 1)
            self.sup.move(
                w,
                S.RETRYING,
                f"attempt {w.attempts} failed: {stop.message}; retrying in {delay:g}s",
                exit_code=exit_code,
                next_attempt_at=time.time() + delay,
            )
        else:
            self.sup.move(
                w,
                S.FAILED,
                f"attempt {w.attempts} ({failed} of {spec.retries.max_attempts} allowed "
                f"failures) failed: {stop.message}",
                exit_code=exit_code,
            )


def describe_failure(rep: Replica) -> str:
    if rep.state == ReplicaState.LOST.value:
        return f"replica {rep.index} lost on {rep.node}: {rep.error}"
    detail = f" ({rep.error})" if rep.error else ""
    if rep.exit_code == 143 and not rep.error:
        detail = " (SIGTERM: stopped after a checkpoint)"
    return f"replica {rep.index} on {rep.node} exited with code {rep.exit_code}{detail}"
