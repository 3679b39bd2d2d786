"""A tenant's budget: what it spent, what its admitted work still holds, and whether more fits. Pure.

Checking a new workload's estimate against ``budget - spent`` alone lets any number of
concurrent submits pass against the same remaining money: none of them has spent anything yet.
So admission *reserves* each workload's estimated cost, and what a tenant has left is its budget
less what it spent and less what its unfinished workloads still hold (their reservation less
what they have spent of it). The store sums and inserts in one transaction with the tenant's
row locked (``WorkloadStore.create_workload``), so concurrent submits take turns, each seeing
the reservations of those before it.

A workload with a timeout is estimated for that long, on every replica, at the highest price it
could be placed at. One without a timeout (a service, a session) is reserved for the network's
``market.reserve_hours_without_timeout``: metering stops a tenant's work when its budget is
spent (``supervisor.metering``), so the reservation is the admission's guard, not the only one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runner.core.ledger import cumulative_charge, estimate_cost, usd


@dataclass(frozen=True)
class Estimate:
    """The most a workload may cost, and how that figure was reached (for the refusal's words)."""

    micros: int
    replicas: int
    seconds: float
    #: False when the spec named no timeout and ``seconds`` is the network's horizon.
    from_timeout: bool


def estimate(
    *, price_per_hour: int, milli_units: int, replicas: int, timeout_s: float | None, horizon_s: float
) -> Estimate:
    """A workload's estimate: ``replicas`` for its timeout (or the horizon) at ``price_per_hour``."""
    seconds = timeout_s if timeout_s else horizon_s
    return Estimate(
        micros=estimate_cost(price_per_hour, milli_units, replicas, seconds),
        replicas=replicas,
        seconds=seconds,
        from_timeout=bool(timeout_s),
    )


def spent_by_replicas(replicas: Iterable[tuple[int, int, int]]) -> int:
    """What replicas ``(price_per_hour, milli_units, metered_s)`` were billed: the ledger's own
    cumulative figure (``ledger.cumulative_charge``), so it matches their usage postings exactly."""
    return sum(cumulative_charge(price, units, seconds) for price, units, seconds in replicas)


def still_held(reserved: int, spent: int) -> int:
    """What an unfinished workload still holds of its reservation: what it may yet spend."""
    return max(reserved - spent, 0)


def refusal(*, budget: int, spent: int, held: int, wanted: Estimate) -> str | None:
    """Why a workload estimated at ``wanted`` does not fit in what the budget has left, in words;
    None when it fits (or costs nothing)."""
    left = budget - spent - held
    if left <= 0:
        return (
            f"budget exhausted: {usd(max(left, 0))} USD left of {usd(budget)} ({usd(spent)} spent, "
            f"{usd(held)} held by unfinished workloads). To fix: the operator raises it (runner admin tenant "
            "budget), or cancel a workload to release what it holds"
        )
    if wanted.micros <= left:
        return None
    how_long = (
        f"{wanted.seconds:g}s" if wanted.from_timeout else f"{wanted.seconds:g}s (no timeout: the network's horizon)"
    )
    return (
        f"this workload may cost up to {usd(wanted.micros)} USD ({wanted.replicas} replica(s) for {how_long} "
        f"at the highest fitting price) but the budget has {usd(left)} USD left ({usd(spent)} spent, "
        f"{usd(held)} held by unfinished workloads). To fix: a shorter timeout, a price cap, or a larger budget"
    )
