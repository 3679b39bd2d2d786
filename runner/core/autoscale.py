"""Autoscaling an inference service: how many replicas it should run, from what they report. Pure.

**The signal is concurrency**: requests in flight per replica, queued or running. By Little's
law a replica's mean concurrency over a report window is its request rate times its latency
(``requests_per_s * latency_ms_p50 / 1000``: the median stands in for the mean, which the
report does not carry). It grows with the queue depth *and* with the latency, it is measured
where the work is done (not at the gateway), and it does not depend on the model's speed: a
replica that is twice as fast clears its queue twice as fast and shows half the concurrency.
The target per replica defaults to one full batch (``batching.max_batch_size``): more than that
in flight means requests wait for a later batch. Optionally, a p99 latency bound adds a replica
while it is broken, whatever the concurrency says.

**Hysteresis: up fast, down slowly.** The wanted count is ``ceil(total / target)`` clamped to
``[min, max]``. It is acted on only when it has said "more" for ``up_after`` seconds (then the
service grows to it at once, several replicas if need be) or "fewer" for ``down_after`` seconds
(then it shrinks by one, and the clock starts again). Any sample that disagrees resets the
clock. Replicas that are starting count toward the current size, so a slow model load does not
make the scaler add replicas again and again while the first new one loads.

Reports older than ``STALE_S`` (or three of their own windows) are ignored; with no fresh report
at all, nothing is decided. The clock lives in memory: after a control-plane restart it starts
again, which only delays a decision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: A report older than this (seconds) says nothing about the load now.
STALE_S = 20.0


@dataclass(frozen=True)
class Sample:
    """One serving replica's latest ``metrics`` report."""

    requests_per_s: float
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    queue_depth: int
    ts: float  # when the supervisor stored the report line
    window_s: float = 5.0

    @property
    def concurrency(self) -> float:
        """Mean requests in flight over the report's window (Little's law)."""
        return self.requests_per_s * (self.latency_ms_p50 or 0.0) / 1000.0

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> "Sample | None":
        """A sample from a replica's stored ``metrics`` report, or None if it is not one."""
        try:
            return cls(
                requests_per_s=float(report.get("requests_per_s") or 0.0),
                latency_ms_p50=_float(report.get("latency_ms_p50")),
                latency_ms_p99=_float(report.get("latency_ms_p99")),
                queue_depth=int(report.get("queue_depth") or 0),
                ts=float(report["ts"]),
                window_s=float(report.get("window_s") or 5.0),
            )
        except (KeyError, TypeError, ValueError):
            return None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Policy:
    """The bounds and thresholds of one service (from its spec)."""

    min: int
    max: int
    target_concurrency: float
    max_p99_ms: float | None = None
    up_after_s: float = 10.0
    down_after_s: float = 120.0

    @classmethod
    def from_spec(cls, spec: Any) -> "Policy":
        a = spec.autoscale
        return cls(
            min=spec.replicas.min,
            max=spec.replicas.max,
            target_concurrency=a.target_concurrency or float(spec.batching.max_batch_size),
            max_p99_ms=a.max_p99_ms,
            up_after_s=a.up_after,
            down_after_s=a.down_after,
        )

    @property
    def fixed(self) -> bool:
        return self.min == self.max


@dataclass(frozen=True)
class Scale:
    """A decision: run ``target`` replicas instead of ``current``, and why (for the event)."""

    current: int
    target: int
    reason: str

    @property
    def message(self) -> str:
        way = "up" if self.target > self.current else "down"
        return f"scaling {way} {self.current} -> {self.target}: {self.reason}"


def wanted(policy: Policy, current: int, samples: list[Sample]) -> tuple[int, str]:
    """The replica count the load calls for now, and the figures behind it."""
    total = sum(s.concurrency for s in samples)
    queued = sum(s.queue_depth for s in samples)
    want = math.ceil(total / policy.target_concurrency - 1e-9) if total > 0 else policy.min
    why = (
        f"{total:.1f} requests in flight on {len(samples)} serving replica(s) (target "
        f"{policy.target_concurrency:g} each), {queued} queued"
    )
    p99s = [s.latency_ms_p99 for s in samples if s.latency_ms_p99 is not None]
    if policy.max_p99_ms is not None and p99s:
        worst = max(p99s)
        why += f", p99 up to {worst:.0f} ms"
        if worst > policy.max_p99_ms:
            want = max(want, current + 1)
            why += f" (over {policy.max_p99_ms:g} ms)"
    return max(policy.min, min(policy.max, want)), why


def fresh(samples: Iterable[Sample | None], now: float) -> list[Sample]:
    return [s for s in samples if s is not None and now - s.ts <= max(STALE_S, 3 * s.window_s)]


class Autoscaler:
    """The clock of one service: how long the load has asked for more, or for fewer."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._direction = 0  # +1: the load asks for more, -1: for fewer, 0: it is content
        self._since = 0.0

    def observe(self, now: float, current: int, samples: Iterable[Sample | None]) -> Scale | None:
        """Feed the latest reports; a ``Scale`` when it is time to act, else None.

        ``current`` is the service's size now: serving and starting replicas alike."""
        p = self.policy
        if current < p.min or current > p.max:  # out of bounds (the spec's bounds rule): back in at once
            target = max(p.min, min(p.max, current))
            self._direction = 0
            return Scale(current, target, f"keeping within replicas {p.min}..{p.max}")
        live = fresh(samples, now)
        if p.fixed or not live:
            self._direction = 0
            return None
        want, why = wanted(p, current, live)
        direction = (want > current) - (want < current)
        if direction != self._direction:
            self._direction, self._since = direction, now
        if direction == 0:
            return None
        held = now - self._since
        if direction > 0 and held >= p.up_after_s:
            self._direction = 0
            return Scale(current, want, f"{why} for {held:.0f}s")
        if direction < 0 and held >= p.down_after_s:
            self._direction = 0
            return Scale(current, current - 1, f"{why} for {held:.0f}s")
        return None
