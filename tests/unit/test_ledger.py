"""Ledger invariants: every transaction balances, metering never drifts, money is integers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.core import ledger
from runner.core.ledger import MICROS, Posting, SlashCause, Transaction, TxKind
from runner.core.network import default_network


def meter_in_steps(price: int, milli: int, cuts: list[int], fee_bps: int = 1000) -> list[Transaction]:
    txs, prev = [], 0
    for cut in cuts:
        tx = ledger.usage(
            replica_key="w-r0-a1",
            tenant="acme",
            provider="p",
            node="n",
            workload_id="w",
            price_per_hour=price,
            milli_units=milli,
            from_s=prev,
            to_s=cut,
            fee_bps=fee_bps,
        )
        if tx is not None:
            txs.append(tx)
        prev = max(prev, cut)
    return txs


@given(
    price=st.integers(0, 10 * MICROS),
    milli=st.integers(1, 16_000),
    cuts=st.lists(st.integers(0, 100_000), max_size=40).map(sorted),
    fee_bps=st.integers(0, 10_000),
)
def test_metering_in_any_steps_bills_exactly_the_whole_run(
    price: int, milli: int, cuts: list[int], fee_bps: int
) -> None:
    txs = meter_in_steps(price, milli, cuts, fee_bps)
    total_s = cuts[-1] if cuts else 0
    balances = ledger.balances(txs)
    whole = ledger.cumulative_charge(price, milli, total_s)
    assert -balances.get("tenant:acme", 0) == whole
    assert balances.get(ledger.FEES, 0) == ledger.fee_of(whole, fee_bps)
    assert sum(balances.values()) == 0
    assert all(isinstance(p.amount, int) for tx in txs for p in tx.postings)


@given(stake=st.integers(0, 100 * MICROS), cause=st.sampled_from(list(SlashCause)), with_tenant=st.booleans())
def test_slashing_never_takes_more_than_the_stake_and_balances(
    stake: int, cause: SlashCause, with_tenant: bool
) -> None:
    config = default_network().market
    tx = ledger.slash(
        provider="p", stake_balance=stake, cause=cause, config=config, key="k", tenant="acme" if with_tenant else None
    )
    if stake == 0:
        assert tx is None
        return
    assert tx is not None
    taken = -sum(p.amount for p in tx.postings if p.account == "stake:p")
    assert 0 < taken <= min(stake, config.slash[cause])
    credit = sum(p.amount for p in tx.postings if p.account == "tenant:acme")
    assert credit == (taken * config.credit_bps // 10_000 if with_tenant else 0)
    assert sum(p.amount for p in tx.postings) == 0


def test_unbalanced_or_float_transactions_are_refused() -> None:
    with pytest.raises(ValueError, match="does not balance"):
        Transaction(key="k", kind=TxKind.USAGE, postings=(Posting("a", 5), Posting("b", -4)))
    with pytest.raises(TypeError, match="not an integer"):
        Transaction(key="k", kind=TxKind.USAGE, postings=(Posting("a", 0.5), Posting("b", -0.5)))  # type: ignore[arg-type]


def test_statements_for_a_tenant_and_a_provider() -> None:
    config = default_network().market
    txs = [ledger.stake_deposit("p", 50 * MICROS, "stake:1")]
    txs += meter_in_steps(2_500_000, 1000, [1800, 3600])  # one H100-hour at 2.50
    slash = ledger.slash(
        provider="p", stake_balance=50 * MICROS, cause=SlashCause.LOST_WORK, config=config, key="s", tenant="acme"
    )
    assert slash is not None
    txs.append(slash)
    bill = ledger.tenant_statement("acme", txs, budget=10 * MICROS)
    assert bill.totals == {
        "charges": 2_500_000,
        "credits": 2_500_000,
        "refunds": 0,
        "owed": 0,
        "budget": 10 * MICROS,
        "budget_left": 10 * MICROS,
    }
    earnings = ledger.provider_statement("p", txs)
    assert earnings.totals["gross"] == 2_500_000 and earnings.totals["fees"] == 250_000
    assert earnings.totals["earned"] == 2_250_000
    assert earnings.totals["slashed"] == 5 * MICROS and earnings.totals["stake"] == 45 * MICROS
    assert ledger.usd(2_250_000) == "2.250000" and ledger.usd(-5) == "-0.000005"


def test_money_has_one_way_in_and_one_way_out() -> None:
    assert ledger.to_micros(2.5) == 2_500_000
    assert ledger.to_micros(0.1 + 0.2) == 300_000  # rounded, not truncated (0.30000000000000004)
    assert ledger.to_micros(1.9999999) == 2_000_000
    assert ledger.to_usd(1_234_567) == 1.234567 and ledger.usd(1_234_567) == "1.234567"
