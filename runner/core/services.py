"""Inference services: the rules for a service's replicas, and how a tenant sees a service. Pure.

A service runs ``desired`` replicas (``replicas.min`` at first, then what the autoscaler says),
each in a **slot** numbered 0..desired-1. A slot's replicas are its attempts: the replica key is
``<service>-r<slot>-a<attempt>``, so a replacement never reuses a key. The slot is what is kept
up; its replicas come and go:

- a replica **serves** once it has printed its ``ready`` report (the workload contract: the
  inference server prints it after its model is loaded and warm) and has not ended;
- a replica that ends is replaced in its slot. A replica that had served, or whose node
  vanished, or that the runner stopped, is replaced at once: that is a service being a service.
  Only a **crash loop** is bounded: replicas that fail again and again without ever serving
  wait ``retries`` backoff between attempts, and after ``retries.max_attempts`` such failures in
  a row the slot is given up. A service with every slot given up and nothing left running fails;
- a replica on a node that drains (or is suspended) gets a successor in its slot first, and is
  retired only once the successor serves (no gap in capacity);
- slots at or above ``desired`` (after a scale-down) have their replicas retired.

``plan`` turns the replica rows into those actions; the controller (``runner/supervisor/
service.py``) carries them out. Everything here is derived from the rows, so a restarted control
plane plans the same thing again: the replica rows, and the events' kinds and data (the size the
autoscaler last set, which ends are recorded), never their messages (``runner.core.events``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.core.events import EventKind, data_of, of_kind
from runner.core.states import ReplicaState

#: The report a replica prints once it serves.
READY = "ready"
#: How the event of a replica's end begins, for people (a restart reads its kind and data instead).
ENDED = "replica "


def serves(rep: Any) -> bool:
    """The replica is up and has said it serves."""
    return rep.finished_at is None and rep.state == ReplicaState.RUNNING.value and READY in (rep.reports or {})


def ever_served(rep: Any) -> bool:
    return READY in (rep.reports or {})


#: The exit code of a process ended by SIGTERM: someone stopped it (the runner retiring it, whose
#: ``wait`` often reports the exit before its ``stop`` call returns; or an operator).
SIGTERM_EXIT = 143


def counts_as_failure(rep: Any) -> bool:
    """An ended replica that counts toward its slot's crash loop: it ended by itself (a service
    has no reason to) before it ever served. Lost nodes and stops (SIGTERM) never count."""
    return (
        rep.finished_at is not None
        and rep.state == ReplicaState.EXITED.value
        and not ever_served(rep)
        and rep.exit_code != SIGTERM_EXIT
    )


def describe_end(rep: Any) -> str:
    """How a replica ended, in words."""
    if rep.state == ReplicaState.LOST.value:
        return f"was lost ({rep.error})" if rep.error else "was lost"
    if rep.state == ReplicaState.STOPPED.value:
        return "was stopped"
    signal = {137: " (killed)", SIGTERM_EXIT: " (SIGTERM)"}.get(rep.exit_code or 0, "")
    detail = f" ({rep.error})" if rep.error else signal
    when = "after serving" if ever_served(rep) else "before it served"
    return f"exited with code {rep.exit_code}{detail} {when}"


@dataclass
class Slot:
    """One slot's replicas, oldest attempt first."""

    index: int
    replicas: list[Any] = field(default_factory=list)

    @property
    def live(self) -> list[Any]:
        return [r for r in self.replicas if r.finished_at is None]

    @property
    def next_attempt(self) -> int:
        return max((r.attempt for r in self.replicas), default=0) + 1

    @property
    def streak(self) -> int:
        """Failures in a row without serving, newest first, up to the last replica that served."""
        n = 0
        for rep in reversed(self.replicas):
            if rep.finished_at is None:
                continue
            if ever_served(rep):
                break
            if counts_as_failure(rep):
                n += 1
        return n

    @property
    def last_end(self) -> Any | None:
        ended = [r for r in self.replicas if r.finished_at is not None]
        return max(ended, key=lambda r: r.finished_at) if ended else None


def slots_of(replicas: Iterable[Any]) -> dict[int, Slot]:
    out: dict[int, Slot] = {}
    for rep in sorted(replicas, key=lambda r: (r.index, r.attempt)):
        out.setdefault(rep.index, Slot(rep.index)).replicas.append(rep)
    return out


@dataclass
class Plan:
    """What to do now to keep ``desired`` slots served."""

    #: (slot, why): place and start a new replica in the slot now.
    start: list[tuple[int, str]] = field(default_factory=list)
    #: (replica, why): take it out of routing and stop it.
    retire: list[tuple[Any, str]] = field(default_factory=list)
    #: slot -> when its next attempt may start (backoff after a failure).
    waiting: dict[int, float] = field(default_factory=dict)
    #: slot -> its last failed replica: the slot failed too often in a row and is given up.
    given_up: dict[int, Any] = field(default_factory=dict)


def backoff_until(slot: Slot, retries: Any, now: float) -> float | None:
    """When a slot in a crash loop may start its next replica, or None when it may now."""
    last = slot.last_end
    if last is None or not slot.streak:
        return None
    at = (last.finished_at or now) + retries.delay_before(slot.streak + 1)
    return at if now < at else None


def plan(replicas: Sequence[Any], *, desired: int, leaving: set[str], retries: Any, now: float) -> Plan:
    """The actions that keep slots 0..desired-1 served; see the module docstring."""
    out = Plan()
    slots = slots_of(replicas)
    for index in range(desired):
        slot = slots.get(index, Slot(index))
        live = slot.live
        streak = slot.streak
        exhausted = streak >= retries.max_attempts
        if not live:
            if exhausted:
                out.given_up[index] = slot.last_end
                continue
            last = slot.last_end
            if (at := backoff_until(slot, retries, now)) is not None:
                out.waiting[index] = at
                continue
            if last is None:
                out.start.append((index, "new replica"))
            else:
                out.start.append((index, f"replacing {last.key}, which {describe_end(last)}"))
            continue
        newest, older = live[-1], live[:-1]
        if serves(newest):
            out.retire.extend((r, f"its successor {newest.key} serves") for r in older)
        if len(live) == 1 and newest.node in leaving:
            if exhausted:
                out.retire.append((newest, f"node {newest.node} is leaving and no successor could serve"))
                out.given_up[index] = slot.last_end
                continue
            if (at := backoff_until(slot, retries, now)) is not None:
                out.waiting[index] = at
                continue
            out.start.append((index, f"moving {newest.key} off node {newest.node}, which is leaving"))
    for index, slot in slots.items():
        if index >= desired:
            out.retire.extend((r, f"scaled down to {desired}") for r in slot.live)
    return out


def desired_from_events(events: Iterable[Any], minimum: int, maximum: int) -> int:
    """The size the last ``SCALED`` event set (a restart reads it back), else ``minimum``."""
    size = minimum
    for event in of_kind(events, EventKind.SCALED):
        to = data_of(event).get("to")
        if isinstance(to, int):
            size = to
    return max(minimum, min(maximum, size))


def ended_keys(events: Iterable[Any]) -> set[str]:
    """Replica keys whose end was already recorded as a ``REPLICA_ENDED`` event."""
    return {str(data_of(e)["key"]) for e in of_kind(events, EventKind.REPLICA_ENDED) if data_of(e).get("key")}


# ----------------------------------------------------------------------------- the tenant's view
def endpoint_url(gateway: str | None, workload_id: str) -> str | None:
    """The service's OpenAI base URL on the gateway (``.../v1``), or None without a gateway."""
    return f"{gateway.rstrip('/')}/s/{workload_id}/v1" if gateway else None


def member_view(rep: Any, now: float) -> dict[str, Any]:
    metrics = (rep.reports or {}).get("metrics") or {}
    fresh = bool(metrics) and now - float(metrics.get("ts") or 0.0) <= 20.0
    return {
        "key": rep.key,
        "slot": rep.index,
        "attempt": rep.attempt,
        "node": rep.node,
        "provider": rep.provider_id,
        "state": rep.state,
        "serving": serves(rep),
        "ports": rep.ports or {},
        "requests_per_s": metrics.get("requests_per_s") if fresh else None,
        "items_per_s": metrics.get("items_per_s") if fresh else None,
        "latency_ms_p50": metrics.get("latency_ms_p50") if fresh else None,
        "latency_ms_p99": metrics.get("latency_ms_p99") if fresh else None,
        "queue_depth": metrics.get("queue_depth") if fresh else None,
        "batch_size_mean": metrics.get("batch_size_mean") if fresh else None,
        "report_age_s": round(now - float(metrics["ts"]), 1) if metrics.get("ts") else None,
    }


def service_view(
    w: Any, spec: Any, replicas: Sequence[Any], events: Sequence[Any], *, gateway: str | None, now: float
) -> dict[str, Any]:
    """A service as its tenant sees it: endpoint, size, replicas with their nodes and rates (``events``:
    its event rows; the size is their data, ``last_scaling`` the last resize's words)."""
    live = [r for r in replicas if r.finished_at is None]
    members = [member_view(r, now) for r in sorted(live, key=lambda r: (r.index, r.attempt))]
    rates = [m["requests_per_s"] for m in members if m["requests_per_s"] is not None]
    items = [m["items_per_s"] for m in members if m["items_per_s"] is not None]
    scaling = [e.message for e in of_kind(events, EventKind.SCALED)]
    return {
        "id": w.id,
        "name": w.name,
        "state": w.state,
        "message": w.message,
        "model": spec.model or "(image default)",
        "endpoint": endpoint_url(gateway, w.id),
        "replicas": {
            "min": spec.replicas.min,
            "max": spec.replicas.max,
            "desired": desired_from_events(events, spec.replicas.min, spec.replicas.max),
            "serving": sum(1 for m in members if m["serving"]),
            "live": len(members),
        },
        "requests_per_s": round(sum(rates), 2) if rates else None,
        "items_per_s": round(sum(items), 2) if items else None,
        "members": members,
        "last_scaling": scaling[-1] if scaling else None,
    }
