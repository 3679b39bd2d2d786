"""What a workload's controller may use of the supervisor that hosts it: ``ControllerHost``.

The controllers (``GangController``, ``ServiceController``, ``SessionController``) and the
``Preemptor`` are handed the ``Supervisor`` itself, but they are written against this protocol:
it names every attribute and method they read, and nothing else, so what a controller depends on
is written down in one place, a type checker holds both sides to it, and a test can tell when a
controller starts to reach for something new. ``Supervisor`` satisfies it structurally (it does
not inherit it); ``tests/unit/test_controller_host.py`` checks that it does.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # (the supervisor's parts import this module: only the annotations need them)
    from runner.core.demand import Demand
    from runner.core.mounts import Mount
    from runner.core.spec import AnySpec
    from runner.core.states import WorkloadState
    from runner.store import Store, Workload
    from runner.supervisor.cluster_view import ClusterView
    from runner.supervisor.compliance import Compliance
    from runner.supervisor.gang import GangController
    from runner.supervisor.placing import Placing
    from runner.supervisor.replicas import ReplicaDriver


class ControllerHost(Protocol):
    """The supervisor as its controllers see it."""

    #: The database: workloads, replicas, events, audit.
    store: Store
    #: Starts, watches and stops replicas through the nodes' agents.
    driver: ReplicaDriver
    #: The fleet as last seen (``nodes``: name -> node, with its address).
    cluster: ClusterView
    #: Node rows, loads, tenants and the terms of a placement (a service places its own replicas).
    placing: Placing
    #: The gang controller: a service builds its launch requests with it, a session runs on it.
    gangs: GangController
    #: Notified after a change that API long-polls wait for (a session's URL, an SLA change).
    changed: threading.Condition
    #: Which nodes the network's rules keep a tenant's work off now (a service moves off them).
    compliance: Compliance

    def spec(self, w: Workload) -> AnySpec:
        """The parsed spec of a workload."""
        ...

    def demand(self, workload_id: str) -> Demand:
        """What one attempt of the workload needs."""
        ...

    def move(self, w: Workload, target: WorkloadState, message: str = "", **fields: Any) -> Workload:
        """Move the workload to ``target`` (with its event); the row as it is now."""
        ...

    def wake(self) -> None:
        """Run the next tick now rather than after the poll interval."""
        ...

    def checkpoint_uri(self, w: Workload, spec: AnySpec) -> str:
        """Where this workload's checkpoints go."""
        ...

    def store_env(self, w: Workload, spec: AnySpec, attempt: int) -> dict[str, str]:
        """The network store's variables for a replica of this attempt."""
        ...

    def mounts(self, w: Workload, spec: AnySpec) -> list[Mount]:
        """The host folders bound into this workload's replicas."""
        ...

    def secret_env(self, w: Workload, spec: AnySpec) -> dict[str, str]:
        """The variables the spec sets from the tenant's secrets, with their values."""
        ...

    def image_digest(self, image: str) -> str:
        """The digest the operator pinned for a network image ("" where none applies)."""
        ...
