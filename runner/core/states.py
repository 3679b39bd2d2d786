"""Workload and replica states, and the rules for moving between them.

    PENDING ──> PLACED ──> STARTING ──> RUNNING ──> SUCCEEDED
       ^           │           │           │
       │           └───────────┴───────────┴──> RETRYING ──> PENDING   (attempts left)
       │                                   └──> FAILED                 (none left)
       └── any non-terminal state ──> CANCELLED

An inference service never succeeds and never retries as a whole: it is RUNNING while at least
one replica serves and goes back to STARTING while none does (``runner/supervisor/service.py``).

A replica (one attempt on one node) has states of its own, as its agent reports them:

    STARTING ──> PULLING ──> RUNNING ──> EXITED | STOPPED | LOST
        │           │
        └───────────┴──> RUNNING, or EXITED | STOPPED | LOST without ever running

PULLING: the node's engine is fetching the image from the network's registry (first use on
that host), with bytes done and total on the replica row. A replica is started, and billed, only
from RUNNING on: its ``started_at`` is the container's own start time, which a pull precedes.

The rules live next to the enum so that every writer (supervisor, API, tests) asks the same
question the same way. The store refuses a transition these rules do not allow.
"""

from __future__ import annotations

from enum import StrEnum


class WorkloadState(StrEnum):
    PENDING = "PENDING"
    PLACED = "PLACED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def can_move_to(self, target: "WorkloadState") -> bool:
        return target in _ALLOWED[self]


_TERMINAL = frozenset({WorkloadState.SUCCEEDED, WorkloadState.FAILED, WorkloadState.CANCELLED})
#: The stored values of the states a workload ends in: what queries for unfinished work leave out.
TERMINAL_VALUES = tuple(sorted(s.value for s in _TERMINAL))

_S = WorkloadState
_ALLOWED: dict[WorkloadState, frozenset[WorkloadState]] = {
    _S.PENDING: frozenset({_S.PLACED, _S.FAILED, _S.CANCELLED}),
    _S.PLACED: frozenset({_S.STARTING, _S.RETRYING, _S.FAILED, _S.CANCELLED}),
    _S.STARTING: frozenset({_S.RUNNING, _S.SUCCEEDED, _S.RETRYING, _S.FAILED, _S.CANCELLED}),
    # RUNNING -> STARTING: a service whose every replica stopped serving while replacements start.
    _S.RUNNING: frozenset({_S.STARTING, _S.SUCCEEDED, _S.RETRYING, _S.FAILED, _S.CANCELLED}),
    _S.RETRYING: frozenset({_S.PENDING, _S.FAILED, _S.CANCELLED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}


class ReplicaState(StrEnum):
    """One attempt of one replica on one node, as its agent reports it. The replica driver
    (``runner/supervisor/replicas.py``) writes only the moves ``can_move_to`` allows."""

    STARTING = "STARTING"  # the row is written and the agent asked; no container runs yet
    PULLING = "PULLING"  # the node's engine pulls the image (progress on the replica row)
    RUNNING = "RUNNING"
    EXITED = "EXITED"  # the process ended by itself; see exit_code
    STOPPED = "STOPPED"  # stopped on purpose (cancel, timeout)
    LOST = "LOST"  # the node or its agent vanished; the outcome is unknown

    def is_terminal(self) -> bool:
        return self in _REPLICA_TERMINAL

    def is_before_start(self) -> bool:
        """Nothing has run yet: no logs to read, nothing to bill, the agent's start in flight."""
        return self in (ReplicaState.STARTING, ReplicaState.PULLING)

    def can_move_to(self, target: "ReplicaState") -> bool:
        return target in _REPLICA_ALLOWED[self]


_R = ReplicaState
_REPLICA_TERMINAL = frozenset({_R.EXITED, _R.STOPPED, _R.LOST})
_REPLICA_ALLOWED: dict[ReplicaState, frozenset[ReplicaState]] = {
    _R.STARTING: frozenset({_R.PULLING, _R.RUNNING, *_REPLICA_TERMINAL}),
    # PULLING -> STARTING: the image is in, the container is being created.
    _R.PULLING: frozenset({_R.STARTING, _R.RUNNING, *_REPLICA_TERMINAL}),
    # Never back to PULLING or STARTING: a late progress report must not undo a start.
    _R.RUNNING: _REPLICA_TERMINAL,
    _R.EXITED: frozenset(),
    _R.STOPPED: frozenset(),
    _R.LOST: frozenset(),
}
