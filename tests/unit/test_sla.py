"""Uptime against the SLA and the reliability prior."""

from __future__ import annotations

from runner.core.network import default_network
from runner.core.sla import UptimeDay, day_breached, monthly_uptime, reliability

SLA = default_network().sla


def test_a_day_with_more_than_30_minutes_offline_breaches() -> None:
    assert not day_breached(UptimeDay("n", "2026-11-01", 86_400, 86_400 - 1800), SLA)
    assert day_breached(UptimeDay("n", "2026-11-01", 86_400, 86_400 - 1801), SLA)


def test_monthly_uptime_and_reliability() -> None:
    days = [UptimeDay("n", f"2026-11-{d:02d}", 86_400, 86_400) for d in range(1, 30)]
    days.append(UptimeDay("n", "2026-11-30", 86_400, 0))
    uptime = monthly_uptime(days)
    assert uptime is not None and abs(uptime - 29 / 30) < 1e-9
    assert monthly_uptime([]) is None
    assert reliability([], SLA) == SLA.monthly_uptime  # a new node starts at the SLA target
    assert reliability(days, SLA) < reliability(days[:-1], SLA)
