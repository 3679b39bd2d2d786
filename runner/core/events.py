"""Control state as data: what an event *is* and why a workload is being stopped. Pure.

The store's events are two things at once: the timeline people read (``message``) and the record
a restarted control plane rebuilds its memory from (a service's size, which replica ends are
recorded, whether a session was announced, whether an SLA breach is open). The second used to be
parsed out of the first (a regex on ``scaling up 1 -> 3``, a ``replica `` prefix, ...), so
rewording a message changed what a restart recovered. Now each event carries a ``kind``
(:class:`EventKind`) and structured ``data``, and every decision reads those: a message is for
people only and may say anything.

Likewise ``Workload.stop_reason``: it stays the words people see, while *why* the runner stops an
attempt is a :class:`StopReason` in ``Workload.stop_kind`` with its details in
``Workload.stop_data``. :class:`Stop` is the one way both are written and read. This module is
imported by the supervisor and by the API alike, so neither reaches into the other for prefixes.

Revision ``0003_event_kinds_and_stop_kinds`` filled these in for rows written before they existed
(the one place that still reads the old message text, once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """What an event records. ``NOTE`` is for people only: nothing is ever decided from one."""

    NOTE = "note"
    #: A state transition (``Store.transition``), or the submit that made the workload.
    STATE = "state"
    #: The runner asked the current attempt to stop; data: ``stop`` (a :class:`StopReason` value).
    STOPPING = "stopping"
    #: A service replica's end is recorded (after its last log lines); data: ``key``, ``node``.
    REPLICA_ENDED = "replica_ended"
    #: A service replica left routing and will be stopped; data: ``key``, ``node``.
    REPLICA_RETIRING = "replica_retiring"
    #: A service replica was placed and is starting; data: ``key``, ``node``.
    REPLICA_STARTING = "replica_starting"
    #: The autoscaler resized a service; data: ``from``, ``to`` (replica counts).
    SCALED = "scaled"
    #: A session's attempt first served; data: ``key``, ``attempt``, ``node``, ``url``.
    SESSION_READY = "session_ready"
    #: A session's SLA broke (``SLA_BREACH``) or held again (``SLA_RECOVERED``); data: ``key``, ``detail``.
    SLA_BREACH = "sla_breach"
    SLA_RECOVERED = "sla_recovered"
    #: No node could take the work now; the message says why.
    WAITING = "waiting"
    #: A session stops another workload to make room; data: ``victim``, ``node``.
    PREEMPTING = "preempting"
    #: A part of the supervisor's tick faulted for this workload (it is tried again).
    FAULT = "fault"
    #: A replica's node is pulling its image; data: ``key``.
    PULLING = "pulling"
    #: A line of a training job's timeline (rank 0's reports).
    TRAINING = "training"
    #: A request by the workload's owner (cancel, a session's end).
    REQUESTED = "requested"


class StopReason(StrEnum):
    """Why the runner ends a workload's current attempt."""

    #: Move the work (a drain, an offboarded node, a preemption, a port clash): placed again at
    #: once and counted as a relocation, not a failure.
    RELOCATE = "relocate"
    #: The tenant's budget is spent: failed, not retried.
    BUDGET = "budget"
    #: The network's rules no longer let the tenant run work (its KYC was rejected): failed, not retried.
    REFUSED = "refused"
    #: An orderly end of a session (its player, or the runner's backstop): succeeded on exit 0.
    END = "end"
    #: The supervisor gave up on the workload (a fault it could not get past).
    FAULT = "fault"
    # Not stored (derived each step from the workload and its replicas), but stops all the same:
    CANCEL = "cancel"
    TIMEOUT = "timeout"
    FAILURE = "failure"


#: How each stored reason read as ``stop_reason`` before it was data; kept so people see the same
#: words. BUDGET's and FAULT's detail is the whole sentence already.
_PREFIX = {StopReason.RELOCATE: "relocate: ", StopReason.END: "end: "}


@dataclass(frozen=True)
class Stop:
    """A stop: its reason, its detail in words (without the reason's prefix), and any data."""

    kind: StopReason
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        """The words people see (``Workload.stop_reason``, events): never read back to decide."""
        return _PREFIX.get(self.kind, "") + self.detail

    def fields(self) -> dict[str, Any]:
        """The workload columns that store this stop (for ``update_workload``/``transition``)."""
        return {
            "stop_kind": self.kind.value,
            "stop_data": {**self.data, "detail": self.detail},
            "stop_reason": self.message,
        }

    @classmethod
    def of(cls, w: Any) -> "Stop | None":
        """The stop stored on a workload row, or None when it is not being stopped."""
        kind = getattr(w, "stop_kind", "") or ""
        if not kind:
            return None
        data = dict(getattr(w, "stop_data", None) or {})
        detail = str(data.pop("detail", ""))
        return cls(StopReason(kind), detail, data)


class StartFailure(StrEnum):
    """Why a node could not start a replica (it ends EXITED with code 125), as data on the replica;
    its ``error`` says the same in words for people, and nothing is decided from those."""

    NONE = ""
    #: A port the host-networked replica must listen on is taken on that node: a gang is placed
    #: again with another port (a relocation, not a failure).
    PORT_IN_USE = "port_in_use"
    #: The image is not on the node and could not be pulled there.
    IMAGE = "image"
    #: Anything else the runtime or the engine refused.
    OTHER = "other"

    @classmethod
    def of(cls, exc: BaseException) -> "StartFailure":
        """The kind of a start's exception (the runtime's named errors; anything else is OTHER)."""
        from runner.core.errors import ImageError, PortInUseError

        if isinstance(exc, PortInUseError):
            return cls.PORT_IN_USE
        if isinstance(exc, ImageError):
            return cls.IMAGE
        return cls.OTHER


#: ``update_workload(**NO_STOP)``: the workload is not being stopped (a new attempt).
NO_STOP: dict[str, Any] = {"stop_kind": "", "stop_data": None, "stop_reason": ""}


def stopping(w: Any) -> bool:
    """The runner is stopping the workload's attempt (a stored stop) or its owner cancelled it."""
    return bool(getattr(w, "stop_kind", "") or getattr(w, "cancel_requested", False))


def of_kind(events: Any, *kinds: EventKind) -> list[Any]:
    """The events (rows with ``kind``) of the given kinds, in order."""
    wanted = {k.value for k in kinds}
    return [e for e in events if (getattr(e, "kind", None) or EventKind.NOTE.value) in wanted]


def data_of(event: Any) -> dict[str, Any]:
    """An event's data (an empty dict where it has none)."""
    return dict(getattr(event, "data", None) or {})
