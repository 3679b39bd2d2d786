"""Attack: many submits at once, each passing against the same remaining budget (issue 15, point 6).

Before reservations, admission checked each workload's estimate against ``budget - spent``;
fifty concurrent submits had spent nothing yet, so all fifty passed and the tenant could run
fifty times what it could pay for. The tests fire the submits at once, at the store (SQLite and
PostgreSQL) and through the real API over HTTPS, and count what got in: never more than the
budget covers, and exactly as much as it covers (so a store that refused everything fails too).
The rules themselves (what is held, what is left) are checked on the pure core.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from runner.core import budget
from runner.core.errors import PolicyError
from runner.core.ledger import MICROS, cumulative_charge
from runner.core.policy import KYC
from runner.core.states import WorkloadState
from runner.store import Replica, Store
from tests.support.inprocess_api import served

SUBMITS = 50
#: Each workload's estimate, and a budget that covers exactly FITS of them.
EACH = budget.Estimate(micros=2 * MICROS, replicas=1, seconds=600, from_timeout=True)
FITS = 7
BUDGET = FITS * EACH.micros + EACH.micros // 2
SPEC = {"name": "job", "kind": "batch", "image": "runner/smoke", "command": ["true"]}


def test_held_is_the_reservation_less_what_was_spent() -> None:
    assert budget.still_held(reserved=10, spent=3) == 7
    assert budget.still_held(reserved=10, spent=12) == 0  # a retry spent past its estimate: holds nothing more
    assert budget.spent_by_replicas([(3_600_000, 1000, 10), (3_600_000, 500, 10)]) == 10_000 + 5_000


def test_refusal_counts_what_unfinished_work_holds() -> None:
    wanted = budget.Estimate(micros=40, replicas=2, seconds=60, from_timeout=True)
    assert budget.refusal(budget=100, spent=20, held=40, wanted=wanted) is None  # 40 left, 40 wanted
    refused = budget.refusal(budget=100, spent=20, held=41, wanted=wanted)
    assert refused is not None and "held by unfinished workloads" in refused and "0.000039 USD left" in refused
    exhausted = budget.refusal(budget=100, spent=60, held=40, wanted=budget.Estimate(0, 1, 60, True))
    assert exhausted is not None and exhausted.startswith("budget exhausted")


def test_work_without_a_timeout_is_estimated_for_the_networks_horizon() -> None:
    e = budget.estimate(price_per_hour=3_600_000, milli_units=1000, replicas=2, timeout_s=None, horizon_s=3600)
    assert (e.micros, e.seconds, e.from_timeout) == (2 * 3_600_000, 3600, False)
    wanted = budget.refusal(budget=100, spent=0, held=0, wanted=e)
    assert wanted is not None and "no timeout: the network's horizon" in wanted


def fire(submit: object, n: int = SUBMITS) -> list[object]:
    """``submit()`` from ``n`` threads released at the same moment; what each returned or raised."""
    start = threading.Barrier(n)

    def one(_: int) -> object:
        start.wait()
        try:
            return submit()  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - the refusal is what the test counts
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_submits_cannot_overspend_at_the_store(db_url: str) -> None:
    store = Store(db_url)
    try:
        store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED, budget_micros=BUDGET)
        outcomes = fire(lambda: store.create_workload(tenant_id="acme", spec=SPEC, estimate=EACH))
        admitted = [o for o in outcomes if isinstance(o, tuple)]
        refused = [o for o in outcomes if isinstance(o, PolicyError)]
        assert len(admitted) + len(refused) == SUBMITS, [o for o in outcomes if isinstance(o, Exception)][:3]
        assert len(admitted) == FITS
        assert all("held by unfinished workloads" in str(r) for r in refused)
        rows = store.list_workloads(tenant_id="acme", limit=1000)
        assert len(rows) == FITS and sum(w.reserved_micros for w in rows) <= BUDGET
    finally:
        store.engine.dispose()


def test_what_a_workload_spent_or_finished_is_released(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED, budget_micros=EACH.micros)
    first, _ = store.create_workload(tenant_id="acme", spec=SPEC, estimate=EACH)
    with pytest.raises(PolicyError):
        store.create_workload(tenant_id="acme", spec=SPEC, estimate=EACH)
    # It runs and is billed half its estimate: half is spent, half still held; nothing is left.
    price, units = 3_600_000, 1000  # 3.6 USD per unit-hour: 1000 micro-USD a second
    seconds = EACH.micros // 2 * 3600 // price
    with store.session() as s:
        s.add(
            Replica(
                key=f"{first.id}-r0-a1",
                workload_id=first.id,
                index=0,
                attempt=1,
                node="n",
                provider_id="p",
                price_micros=price,
                milli_units=units,
                metered_s=seconds,
                state="RUNNING",
            )
        )
    assert budget.spent_by_replicas([(price, units, seconds)]) == cumulative_charge(price, units, seconds)
    with pytest.raises(PolicyError, match="held by unfinished workloads"):
        store.create_workload(tenant_id="acme", spec=SPEC, estimate=EACH)
    store.transition(first.id, WorkloadState.CANCELLED)
    # Finished: it holds nothing, and the ledger (no postings here) says nothing was spent.
    store.create_workload(tenant_id="acme", spec=SPEC, estimate=EACH)


def test_concurrent_submits_through_the_api_cannot_overspend(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    # One CPU core for 600 s at the network's CPU price (0.02 USD/core-hour, no nodes registered).
    each = cumulative_charge(20_000, 1000, 600)
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED, budget_micros=FITS * each + each // 2)
    key = store.create_api_key("acme")
    spec = {**SPEC, "timeout": 600}
    with served(tmp_path / "home", store) as settings:
        url = f"https://127.0.0.1:{settings.server_port}/v1/workloads"
        with httpx.Client(verify=settings.server_verify, headers={"Authorization": f"Bearer {key}"}) as http:
            outcomes = fire(lambda: http.post(url, json={"spec": spec}, timeout=60))
    codes = sorted(o.status_code for o in outcomes if isinstance(o, httpx.Response))
    assert len(codes) == SUBMITS, [o for o in outcomes if not isinstance(o, httpx.Response)][:3]
    assert codes.count(201) == FITS and codes.count(403) == SUBMITS - FITS, codes
    rows = store.list_workloads(tenant_id="acme", limit=1000)
    assert len(rows) == FITS and all(w.reserved_micros == each for w in rows)
