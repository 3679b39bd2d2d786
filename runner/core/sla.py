"""Uptime against the SLA, and the reliability score placement uses. Pure.

The checker samples each node's liveness at a fixed interval and adds the interval to the
node's ``observed`` seconds for that UTC day, and to ``online`` when the node answered. From
those daily figures:

- a **day breaches** the SLA when the node was offline longer than ``max_daily_offline_s``
  (default 30 minutes, in the spirit of the large networks' host terms);
- **monthly uptime** is online / observed over the last 30 days, against ``monthly_uptime``
  (default 99%);
- **reliability** (0..1, used to score and filter placement) is the same ratio with a prior of
  one observed day at the SLA target, so a brand-new node is neither perfect nor untrusted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class SLAConfig:
    monthly_uptime: float  # the network's values: runner/data/network.yaml, once
    max_daily_offline_s: float
    prior_days: float = 1.0


@dataclass(frozen=True)
class UptimeDay:
    node: str
    day: str  # YYYY-MM-DD, UTC
    observed_s: float
    online_s: float

    @property
    def offline_s(self) -> float:
        return max(self.observed_s - self.online_s, 0.0)


def day_breached(day: UptimeDay, sla: SLAConfig) -> bool:
    return day.offline_s > sla.max_daily_offline_s


def monthly_uptime(days: Iterable[UptimeDay]) -> float | None:
    """Online share over the days given (the caller passes the last 30); None when never observed."""
    observed = online = 0.0
    for d in days:
        observed += d.observed_s
        online += d.online_s
    return online / observed if observed else None


def reliability(days: Iterable[UptimeDay], sla: SLAConfig) -> float:
    prior_observed = sla.prior_days * 86_400.0
    observed = online = 0.0
    for d in days:
        observed += d.observed_s
        online += d.online_s
    return (online + sla.monthly_uptime * prior_observed) / (observed + prior_observed)


def utc_day(ts: float) -> str:
    """The UTC day (``YYYY-MM-DD``) a Unix time falls on: uptime and SLA breaches count per such day."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")
