"""Workload and replica states, and the rules for moving between them.

    PENDING ──> PLACED ──> STARTING ──> RUNNING ──> SUCCEEDED
       ^           │           │           │
       │           └───────────┴───────────┴──> RETRYING ──> PENDING   (attempts left)
       │                                   └──> FAILED                 (none left)
       └── any non-terminal state ──> CANCELLED

An inference service never succeeds and never retries as a whole: it is RUNNING while at least
one replica serves and goes back to STARTING while none does (``runner/supervisor/service.py``).

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
    """One attempt of one replica on one node, as its agent reports it."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    EXITED = "EXITED"  # the process ended by itself; see exit_code
    STOPPED = "STOPPED"  # stopped on purpose (cancel, timeout)
    LOST = "LOST"  # the node or its agent vanished; the outcome is unknown

    def is_terminal(self) -> bool:
        return self in (ReplicaState.EXITED, ReplicaState.STOPPED, ReplicaState.LOST)
