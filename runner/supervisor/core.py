"""The supervisor: drives every workload through its states. One loop, never blocked on a node.

Each tick: refresh the fleet (Ray nodes and their agents), activate nodes that joined, place every
pending workload on one snapshot of the nodes (in submission order), step every other active
workload through its controller, bill running replicas, apply budgets and drains, and remove
orphans. A fault in one workload's part of a tick (reading its spec, placing, stepping or
metering it) is that workload's alone: it is logged with its traceback, recorded as an event, and
the tick goes on for everyone else; a workload that faults ``FAULT_LIMIT`` times in a row in the
same part (or whose stored spec does not parse) is failed with the exception in its reason.
Between ticks it sleeps until a submit wakes it, an agent call completes, or a short poll passes.
It holds no state the store does not: a restarted supervisor asks the same questions again and
re-adopts what runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from runner import cluster
from runner.core.agent_wire import NodePublicKeys
from runner.core.demand import Demand
from runner.core.errors import NotFoundError, UserError
from runner.core.events import EventKind, Stop, StopReason
from runner.core.image_refs import from_network_registry
from runner.core.mounts import CHECKPOINTS, MODEL, Mount, file_mount
from runner.core.network import NetworkConfig
from runner.core.policy import NodeState
from runner.core.preemption import priority
from runner.core.secrets import masked
from runner.core.spec import AnySpec, parse_workload
from runner.core.states import ReplicaState, WorkloadState
from runner.runtime import ReplicaStatus
from runner.secret_box import SecretBox
from runner.settings import Settings
from runner.store import Replica, Store, Workload
from runner.store_credentials import StoreCredentials, attempt_holder, read_admin
from runner.supervisor.agent_link import NotTheNode
from runner.supervisor.checker import Checker
from runner.supervisor.cluster_view import ClusterView
from runner.supervisor.compliance import Compliance
from runner.supervisor.gang import GangController
from runner.supervisor.metering import Metering
from runner.supervisor.placing import Placing
from runner.supervisor.preempt import Preemptor
from runner.supervisor.replicas import ReplicaDriver
from runner.supervisor.service import ServiceController
from runner.supervisor.session import SessionController

log = logging.getLogger("runner.supervisor")


def tenant_artifacts(settings: Settings, tenant_id: str) -> Path:
    """A tenant's own folder of the ``file://`` artifact store: the only host folder its
    workloads may name (``runner.api.workloads.admit`` enforces it)."""
    return settings.artifacts_dir / tenant_id


S = WorkloadState
SLA_SETTLE_S = 60.0
#: Ticks in a row one part of a workload's supervision may fault before the workload is failed: a
#: passing fault (a database hiccup, an agent restarting) gets another try; one that raises every
#: tick does not hold a place in the loop for good.
FAULT_LIMIT = 3
#: How often keys of ended workloads left by an earlier control plane are looked for.
REVOKE_SWEEP_S = 30.0
#: How long one ``ray.wait`` of an idle loop lasts before it looks at its wake event again.
WAKE_SLICE_S = 0.05


class Supervisor:
    def __init__(self, store: Store, settings: Settings, config: NetworkConfig) -> None:
        self.store = store
        self.settings = settings
        self.config = config
        self.cluster = ClusterView(settings, keys_of=self._node_keys, on_impostor=self._impostor)
        self.placing = Placing(store, config, self.cluster)
        self.metering = Metering(store, config, self.cluster)
        self.compliance = Compliance(store, config)
        self.secret_box = SecretBox(settings.secrets_key_path)
        #: Workload -> its secrets' values by name, opened once (to start replicas, to mask logs).
        self._secret_values: dict[str, dict[str, str]] = {}
        self.driver = ReplicaDriver(
            store,
            self.cluster,
            poll_interval_s=settings.poll_interval_s,
            on_finished=self._replica_finished,
            mounts=lambda w: self.mounts(w, self.spec(w)),
            mask=self.mask_secrets,
        )
        self.gangs = GangController(self)
        #: Which controller steps each kind once it is placed. Batch and training jobs are gangs;
        #: inference services and gaming sessions get controllers of their own.
        self.controllers: dict[str, Any] = {
            "batch": self.gangs,
            "training": self.gangs,
            "inference": ServiceController(self),
            "gaming": SessionController(self),
        }
        self.preemptor = Preemptor(self, config.preemption)
        self.checker = Checker(store, config, self.cluster)
        self.network_store = settings.network_store
        self.store_credentials = (
            StoreCredentials(self.network_store, read_admin(settings.store_admin_path), settings.store_keys_dir)
            if self.network_store
            else None
        )
        self._revoke_ended_at = 0.0
        self._specs: dict[str, AnySpec] = {}
        #: (workload, part of the tick) -> faults in a row there (see ``_guarded``).
        self._faults: dict[tuple[str, str], int] = {}
        self._wake = threading.Event()
        self._watched: set[Any] = set()  # agent calls that completed and woke the loop once
        self._settled_at = 0.0
        #: Notified after every state change, for API long-polls (``--wait``).
        self.changed = threading.Condition()

    # -- shared helpers ------------------------------------------------------------------------------
    def spec(self, w: Workload) -> AnySpec:
        """The parsed spec of a workload (specs never change, so each is parsed once)."""
        spec = self._specs.get(w.id)
        if spec is None:
            spec = self._specs[w.id] = parse_workload(w.spec, source=w.source or w.id)
        return spec

    def demand(self, workload_id: str) -> Demand:
        return Demand.from_spec(self.spec(self.store.get_workload(workload_id)))

    def move(self, w: Workload, target: WorkloadState, message: str = "", **fields: Any) -> Workload:
        row = self.store.transition(w.id, target, message, **fields)
        log.info("%s %s -> %s %s", w.id, w.state, target, message)
        if target.is_terminal():
            self._revoke_store_credential(w.id)
            self._specs.pop(w.id, None)
            for key in [k for k in self._faults if k[0] == w.id]:
                del self._faults[key]
        with self.changed:
            self.changed.notify_all()
        return row

    def checkpoint_uri(self, w: Workload, spec: AnySpec) -> str:
        """Where this workload's checkpoints go: the spec's URI, else the tenant's prefix of the
        network's store, else the tenant's folder of the home's ``file://`` store (each tenant's
        URIs must stay under its own)."""
        base = getattr(getattr(spec, "checkpoint", None), "uri", None) or (
            self.network_store.tenant_uri(w.tenant_id)
            if self.network_store
            else tenant_artifacts(self.settings, w.tenant_id).as_uri()
        )
        return f"{base.rstrip('/')}/{w.id}/"

    def store_env(self, w: Workload, spec: AnySpec, attempt: int) -> dict[str, str]:
        """The network store's variables for a replica of this workload: a credential of its own
        (of this attempt, for a training gang: the earlier attempts' are revoked, which fences a
        gang cut off from the head but not from the store), for its own prefix and the model it
        serves from the store; {} when it uses no such store."""
        store, creds = self.network_store, self.store_credentials
        if store is None or creds is None:
            return {}
        training = spec.kind == "training"
        write = self.checkpoint_uri(w, spec) if training else store.workload_uri(w.tenant_id, w.id)
        model = getattr(spec, "model", None)
        read = (model,) if model and store.holds(model) else ()
        if not (training and store.holds(write)) and not read:
            return {}
        if not training:
            return creds.env_for(w.id, write, read)
        env = creds.env_for(attempt_holder(w.id, attempt), write, read)
        creds.revoke_earlier_attempts(w.id, attempt)
        return env

    def _revoke_store_credential(self, workload_id: str) -> None:
        if self.store_credentials is None:
            return
        for holder in self.store_credentials.kept(workload_id):
            try:
                self.store_credentials.revoke(holder)
            except Exception as exc:  # the store is away: the next sweep (``revoke_ended``) retries
                log.warning("could not revoke the store credential of %s yet: %s", holder, exc)

    def revoke_ended_credentials(self) -> None:
        """Revoke what a control plane that died mid-way left: keys of workloads that ended."""
        if self.store_credentials is None or time.monotonic() - self._revoke_ended_at < REVOKE_SWEEP_S:
            return
        self._revoke_ended_at = time.monotonic()
        self.store_credentials.revoke_ended(lambda wid: self._has_ended(wid))

    def _has_ended(self, workload_id: str) -> bool:
        try:
            return WorkloadState(self.store.get_workload(workload_id).state).is_terminal()
        except NotFoundError:
            return True  # a key file of a workload this database never had: nobody may use it

    def secret_env(self, w: Workload, spec: AnySpec) -> dict[str, str]:
        """The variables the spec sets from the tenant's secrets, with their values: for the
        start command only (sealed to the node on the way), never stored."""
        values = self._secrets_of(w, spec)
        missing = sorted(name for name in spec.secrets.values() if name not in values)
        if missing:
            raise UserError(
                f"secrets: the tenant has no secret {', '.join(map(repr, missing))} any more. "
                f"To fix: runner secrets set {missing[0]}, then submit again"
            )
        return {var: values[name] for var, name in spec.secrets.items()}

    def mask_secrets(self, w: Workload, lines: list[str]) -> list[str]:
        """The workload's output lines with its secrets' values replaced by their names."""
        spec = self.spec(w)
        return masked(lines, self._secrets_of(w, spec)) if spec.secrets else lines

    def _secrets_of(self, w: Workload, spec: AnySpec) -> dict[str, str]:
        known = self._secret_values.get(w.id)
        if known is None:
            sealed = self.store.sealed_secrets(w.tenant_id, set(spec.secrets.values()))
            known = {name: self.secret_box.open(value) for name, value in sealed.items()}
            if len(known) == len(set(spec.secrets.values())):  # (one missing is looked up again)
                self._secret_values[w.id] = known
        return known

    def image_digest(self, image: str) -> str:
        """The digest a node must run ``image`` as ("" where the image is not the network
        registry's); "" too where the operator never pushed it, and the node refuses to pull it."""
        if not from_network_registry(image, self.settings.registry):
            return ""
        return self.store.image_digest(image) or ""

    def mounts(self, w: Workload, spec: AnySpec) -> list[Mount]:
        """The host folders bound into this workload's replicas (``runner.core.mounts``): a training
        job's ``file://`` checkpoint folder; the ``file://`` checkpoint an inference service
        serves, read-only. Launch requests and the reading of reports both ask here."""
        if spec.kind == "training":
            mount = file_mount(self.checkpoint_uri(w, spec), CHECKPOINTS)
        elif spec.kind == "inference" and spec.model:
            mount = file_mount(spec.model, MODEL, read_only=True)
        else:
            mount = None
        return [mount] if mount else []

    # -- node identity -------------------------------------------------------------------------------
    def _node_keys(self, name: str) -> NodePublicKeys | None:
        """The keys node ``name`` registered at join, which its agent must prove it holds."""
        try:
            row = self.store.get_node(name)
        except NotFoundError:
            return None
        return NodePublicKeys.from_dict(row.node_keys) if row.node_keys else None

    def _impostor(self, impostor: NotTheNode, ray_node_id: str) -> None:
        """An actor answered for a node it is not. Audited, and the provider whose machine ran it
        is suspended, every node of it: it used the cluster token to take another node's name.
        The machine is known by the Ray node the actor ran on: a registered node of another name,
        or (a raylet that claims the victim's name) the one registered node at its address."""
        hosts = [n for n in cluster.list_nodes() if n.node_id == ray_node_id]
        host = hosts[0] if hosts else None
        registry = {n.name: n for n in self.store.registry()}
        culprit = None
        if host is not None and host.name != impostor.node and host.name in registry:
            culprit = registry[host.name]
        elif host is not None:
            same_address = [
                n
                for n in cluster.list_nodes()
                if n.alive and n.address == host.address and n.name != impostor.node and n.name in registry
            ]
            culprit = registry[same_address[0].name] if len(same_address) == 1 else None
        provider = culprit.provider_id if culprit is not None else None
        self.store.audit(
            "node.impostor",
            {
                "node": impostor.node,
                "reason": impostor.reason,
                "ray_node_id": ray_node_id,
                "address": host.address if host else "",
                "provider": provider,
            },
        )
        if provider is None:
            return
        for n in registry.values():
            if n.provider_id == provider and NodeState(n.state) not in (NodeState.SUSPENDED, NodeState.OFFBOARDED):
                self.store.move_node(
                    n.name, NodeState.SUSPENDED, f"its provider's machine claimed node {impostor.node}", by="network"
                )

    def refresh_nodes(self, force: bool = False) -> None:
        self.cluster.refresh(force=force)

    # -- loop ----------------------------------------------------------------------------------------
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
        """Sleep until woken (a submit, a cancel), an agent call that changes a replica's state
        completes, or ``timeout_s`` passes. Calls are waited on with ``ray.wait``, which reads no
        answer: a future (``ref.future()``, as this did before) unpickles the answer the moment
        it arrives, here, and an answer may be an impostor's pickle that runs its code in the
        control plane (``tests/integration/test_agent_commands.py`` saw it do so). Waiting in
        slices keeps a submit's wake prompt; a call that woke the loop once does not again."""
        refs = set(self.driver.wake_refs() + self.cluster.pending_refs())
        self._watched &= refs  # (done calls drop out: their results were taken in)
        waiting = list(refs - self._watched)
        deadline = time.monotonic() + timeout_s
        while not self._wake.is_set() and (left := deadline - time.monotonic()) > 0:
            if not waiting:
                self._wake.wait(left)
                break
            done, waiting = ray.wait(waiting, num_returns=1, timeout=min(WAKE_SLICE_S, left))
            if done:
                self._watched.update(done)
                break
        self._wake.clear()

    def tick(self) -> None:
        self.cluster.refresh()
        self.placing.activate_nodes()
        workloads = self._read_specs(self.store.active_workloads())
        self._apply_budgets_and_drains(workloads)
        pending = [w for w in workloads if w.state == S.PENDING.value]
        if pending:
            try:
                self._place(pending)
            except Exception:  # not one workload's (those are guarded inside): running work is still stepped
                log.exception("placement round failed; the tick goes on")
        for w in workloads:
            if w.state != S.PENDING.value:
                self._guarded(
                    w.id, "stepping", lambda w=w: self.controllers[w.kind].step(self.store.get_workload(w.id))
                )
        active = self.store.active_replicas()
        self.metering.meter(
            (r for r in active if r.started_at is not None),
            guard=lambda workload_id, bill: self._guarded(workload_id, "metering", bill),
        )
        self.placing.finish_drains(active, in_use=self.driver.nodes_in_use())
        if time.monotonic() - self._settled_at > SLA_SETTLE_S:
            self._settled_at = time.monotonic()
            self.metering.settle_sla()
        self.cluster.reconcile(lambda: {r.key for r in self.store.active_replicas()}, set(self.driver.calls))
        self.revoke_ended_credentials()

    def _place(self, pending: list[Workload]) -> None:
        placer = self.placing.placer(self.placing.loads(self.store.active_replicas(), self.demand))
        # Higher priority first (sessions): what a preemption freed goes to the session it was freed for.
        for w in sorted(pending, key=lambda w: -priority(w.kind)):
            self._guarded(w.id, "placing", lambda w=w: self._place_one(placer, w))

    def _place_one(self, placer: Any, w: Workload) -> None:
        if w.cancel_requested:
            self.move(w, S.CANCELLED, "cancelled before placement")
            return
        over = self.metering.over_budget(w.tenant_id)
        if over:
            self.move(w, S.FAILED, over)
            return
        demand = self.demand(w.id)
        decision = self.placing.decide(placer, w, demand)
        if not decision.placed:
            if decision.message != w.message:  # record each new reason once, not every tick
                self.store.update_workload(w.id, message=decision.message)
                self.store.add_event(w.id, S.PENDING.value, decision.message, kind=EventKind.WAITING)
            self.preemptor.make_room(placer, w, demand, decision)
            return
        terms = [self.placing.terms(placer, node, demand) for node in decision.nodes]
        self.controllers[w.kind].launch(w, decision, terms)

    # -- faults: one workload's, not the loop's ------------------------------------------------------
    def _read_specs(self, workloads: list[Workload]) -> list[Workload]:
        """The workloads whose spec (and demand) can be read; each is read once, then cached. Every
        other part of a tick asks for specs, for other workloads' too (the load on each node), so a
        spec that does not parse (stored under looser rules by an older version) is failed here at
        once, before it can fault the placement of everyone else."""
        return [
            w
            for w in workloads
            if w.id in self._specs
            or self._guarded(w.id, "reading its spec", lambda w=w: Demand.from_spec(self.spec(w)), limit=1)
        ]

    def _guarded(self, workload_id: str, part: str, run: Callable[[], Any], *, limit: int = FAULT_LIMIT) -> bool:
        """Run one workload's ``part`` of the tick; True when it went through. A fault is logged
        with its traceback and recorded as the workload's event; the ``limit``-th in a row of the
        same part fails the workload, with the exception in its reason."""
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - any fault at all: that is the isolation (logged in _fault)
            self._fault(workload_id, part, exc, limit)
            return False
        self._faults.pop((workload_id, part), None)
        return True

    def _fault(self, workload_id: str, part: str, exc: Exception, limit: int) -> None:
        count = self._faults.get((workload_id, part), 0) + 1
        self._faults[(workload_id, part)] = count
        self._specs.pop(workload_id, None)  # read afresh next time
        error = f"{type(exc).__name__}: {str(exc)[:500]}"
        log.error("%s: supervisor fault while %s (%d of %d): %s", workload_id, part, count, limit, error, exc_info=exc)
        try:
            w = self.store.get_workload(workload_id)
            if WorkloadState(w.state).is_terminal():
                return
            if count < limit:
                self.store.add_event(
                    w.id,
                    w.state,
                    f"supervisor fault while {part} ({count} of {limit}; tried again next tick): {error}",
                    kind=EventKind.FAULT,
                    data={"part": part, "count": count},
                )
                return
            again = f" ({count} times in a row)" if count > 1 else ""
            self._give_up(w, f"supervisor fault while {part}{again}: {error}")
        except Exception:  # the store itself may be what fails: the log above is the record then
            log.exception("%s: cannot record the supervisor fault", workload_id)

    def _give_up(self, w: Workload, reason: str) -> None:
        """Fail a workload its own controller cannot drive: FAILED with ``reason`` (and its event),
        its live replicas ended and billed to now, and their containers removed."""
        self.move(w, S.FAILED, reason, **Stop(StopReason.FAULT, reason).fields())
        now = time.time()
        for rep in self.store.replicas(w.id):
            if rep.finished_at is not None:
                continue
            try:
                self.store.update_replica(
                    rep.key, state=ReplicaState.STOPPED.value, finished_at=now, error=f"stopped: {reason}"[:1000]
                )
                self.driver.forget(rep, remove=True)  # (and the fleet removes any container left over)
                self.metering.meter([self.store.get_replica(rep.key)], force=True)
            except Exception:
                log.exception("%s: cannot end replica %s of the failed workload", w.id, rep.key)

    def _apply_budgets_and_drains(self, workloads: list[Workload]) -> None:
        """Ask running work to stop when its tenant may run no more (its KYC: ``Compliance``) or
        its budget is spent, and to move when its node drains (or is suspended) or the rules now
        keep its tenant off that node (export control, geofences, the provider's KYC)."""
        holding = [w for w in workloads if w.state in (S.STARTING.value, S.RUNNING.value) and not w.stop_kind]
        if not holding:
            return
        # Work leaves draining nodes, and suspended ones: a node that failed its benchmark
        # challenge must not keep billing tenants for a GPU it may not have.
        leaving = {
            n.name: n.state
            for n in self.store.registry()
            if n.state in (NodeState.DRAINING.value, NodeState.SUSPENDED.value)
        }
        budgets: dict[str, str | None] = {}
        for w in holding:
            refused = self.compliance.tenant_refusal(w.tenant_id)
            if w.tenant_id not in budgets:
                budgets[w.tenant_id] = self.metering.over_budget(w.tenant_id)
            over = budgets[w.tenant_id]  # "budget exhausted: ..."
            stop = Stop(StopReason.REFUSED, refused) if refused else Stop(StopReason.BUDGET, over) if over else None
            # A service moves its replicas off a leaving node one by one itself (no gap in capacity).
            if stop is None and not getattr(self.controllers[w.kind], "moves_replicas_itself", False):
                nodes = {r.node for r in self.gangs.current(w) if r.finished_at is None}
                gone = sorted(nodes & set(leaving))
                ruled_out = self.compliance.nodes_ruled_out(w.tenant_id)
                off = sorted(nodes & set(ruled_out))
                if gone:
                    stop = Stop(
                        StopReason.RELOCATE, f"move off {leaving[gone[0]]} node {', '.join(gone)}", {"nodes": gone}
                    )
                elif off:
                    stop = Stop(
                        StopReason.RELOCATE,
                        f"move off node {', '.join(off)}: {ruled_out[off[0]]}",
                        {"nodes": off, "rule": ruled_out[off[0]]},
                    )
            if stop is not None:
                self.store.update_workload(w.id, **stop.fields())
                self.store.add_event(
                    w.id, w.state, f"stopping: {stop.message}", kind=EventKind.STOPPING, data={"stop": stop.kind.value}
                )
                if stop.kind is StopReason.REFUSED or "rule" in stop.data:  # the network's rules acted on a tenant
                    self.store.audit(
                        "workload.ruled_out",
                        {"workload": w.id, "tenant": w.tenant_id, "stop": stop.kind.value, "why": stop.message},
                    )
                log.info("%s: stopping: %s", w.id, stop.message)

    def _replica_finished(self, w: Workload, rep: Replica, status: ReplicaStatus) -> None:
        self.metering.replica_finished(w, rep, status)
