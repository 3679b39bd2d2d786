"""The daily SLA slash end to end over a real store (SQLite and PostgreSQL): uptime rows in, the
ledger's balances out.

``Metering.settle_sla`` (the supervisor runs it every few minutes) reads ``store.uptime_days`` and
slashes a provider's stake once for each *finished* UTC day one of its nodes spent offline beyond
the SLA's allowance (30 minutes by default), by the configured amount (2 USD). The balances are
read from the store's ledger, not from any summary the code under test returns.
"""

from __future__ import annotations

import time

from runner.core import ledger
from runner.core.network import default_network
from runner.core.policy import KYC, NodeState
from runner.core.sla import utc_day
from runner.store import Store
from runner.supervisor.metering import Metering

DAY = 86_400


def network(db_url: str) -> tuple[Store, Metering]:
    store = Store(db_url)
    for provider in ("flaky-dc", "steady-dc"):
        store.add_provider(provider, country="NL", kyc=KYC.VERIFIED)
        store.post(ledger.stake_deposit(provider, 50_000_000, key=f"stake:{provider}:initial"))
        store.register_node(
            name=f"{provider}-1",
            provider_id=provider,
            state=NodeState.VERIFIED,
            decision={},
            region="eu-west",
            country="NL",
            cpus=2,
            memory_mb=2048,
        )
    return store, Metering(store, default_network(), cluster=None)  # type: ignore[arg-type]  # settle_sla needs no cluster


def stake(store: Store, provider: str) -> int:
    return store.balance(ledger.stake_account(provider))


def test_a_day_offline_beyond_the_allowance_is_slashed_once(db_url: str) -> None:
    store, market = network(db_url)
    config = default_network()
    allowance = config.sla.max_daily_offline_s
    assert allowance == 30 * 60
    amount = config.market.slash[ledger.SlashCause.SLA_BREACH]
    assert amount == 2_000_000
    yesterday, before = utc_day(time.time() - DAY), utc_day(time.time() - 2 * DAY)
    store.add_uptime("flaky-dc-1", yesterday, observed_s=DAY, online_s=DAY - allowance - 60)  # 31 min offline
    store.add_uptime("flaky-dc-1", before, observed_s=DAY, online_s=DAY - allowance)  # exactly the allowance
    store.add_uptime("steady-dc-1", yesterday, observed_s=DAY, online_s=DAY - 60)
    slashed_before = store.balance(ledger.SLASHED)

    market.settle_sla()
    assert stake(store, "flaky-dc") == 50_000_000 - amount
    assert stake(store, "steady-dc") == 50_000_000
    assert store.balance(ledger.SLASHED) - slashed_before == amount  # no tenant to credit: the network keeps it
    # Settled again (the next round, or a restarted server): nothing taken twice.
    market.settle_sla()
    market.settle_sla()
    assert stake(store, "flaky-dc") == 50_000_000 - amount
    txs = [tx for tx in store.transactions(account=ledger.stake_account("flaky-dc")) if tx.kind == ledger.TxKind.SLASH]
    assert len(txs) == 1 and txs[0].refs["cause"] == "sla_breach" and txs[0].refs["node"] == "flaky-dc-1"
    assert yesterday in txs[0].key
    assert store.verify_audit().ok


def test_today_is_not_settled_until_it_is_over(db_url: str) -> None:
    store, market = network(db_url)
    store.add_uptime("flaky-dc-1", utc_day(time.time()), observed_s=3 * 3600, online_s=0)  # offline for hours, today
    market.settle_sla()
    assert stake(store, "flaky-dc") == 50_000_000
    assert not store.uptime_days("flaky-dc-1")[0].breach_recorded


def test_a_slash_never_takes_more_than_the_stake(db_url: str) -> None:
    store, market = network(db_url)
    store.post(
        ledger.Transaction(
            key="drain-stake",
            kind=ledger.TxKind.PAYOUT,
            memo="",
            refs={},
            postings=(
                ledger.Posting(ledger.stake_account("flaky-dc"), -49_500_000),
                ledger.Posting(ledger.EXTERNAL, 49_500_000),
            ),
        )
    )
    assert stake(store, "flaky-dc") == 500_000
    for days_ago in (1, 2):
        store.add_uptime("flaky-dc-1", utc_day(time.time() - days_ago * DAY), observed_s=DAY, online_s=DAY / 2)
    market.settle_sla()
    assert stake(store, "flaky-dc") == 0
