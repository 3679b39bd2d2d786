"""What a tenant's budget is used by: what it spent, and what its unfinished workloads hold.

Read inside the transaction that admits a workload, with the tenant's row locked
(``WorkloadStore.create_workload``): a query, no writes. Its own module because the ledger's
store and the workloads' store both stand on it.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from runner.core import budget, ledger
from runner.core.states import TERMINAL_VALUES
from runner.store.models import LedgerPosting, Replica, Workload


def tenant_spent_and_held(s: Session, tenant_id: str) -> tuple[int, int]:
    """What the tenant has spent (its account's charges less credits) and what its unfinished
    workloads still hold of their reservations (``runner.core.budget``), read in session ``s``:
    a submit reads them with the tenant locked, in the transaction that adds its own."""
    spent = -int(
        s.scalar(
            select(func.coalesce(func.sum(LedgerPosting.amount), 0)).where(
                LedgerPosting.account == ledger.tenant_account(tenant_id)
            )
        )
        or 0
    )
    holding = {
        workload_id: reserved
        for workload_id, reserved in s.execute(
            select(Workload.id, Workload.reserved_micros).where(
                Workload.tenant_id == tenant_id, Workload.state.not_in(TERMINAL_VALUES), Workload.reserved_micros > 0
            )
        )
    }
    billed: dict[str, list[tuple[int, int, int]]] = {}
    if holding:
        rows = s.execute(
            select(Replica.workload_id, Replica.price_micros, Replica.milli_units, Replica.metered_s).where(
                Replica.workload_id.in_(list(holding))
            )
        )
        for workload_id, price, units, seconds in rows:
            billed.setdefault(workload_id, []).append((price or 0, units or 0, seconds or 0))
    held = sum(
        budget.still_held(reserved, budget.spent_by_replicas(billed.get(workload_id, ())))
        for workload_id, reserved in holding.items()
    )
    return spent, held
