"""The ledger: metering, bills, earnings, stakes and slashing, as double-entry transactions. Pure.

Every movement of money is a ``Transaction`` whose postings sum to exactly zero, in integer
micro-USD (1 USD = 1_000_000), never floats. Accounts and what their balance means:

    tenant:<id>      minus what the tenant owes: usage charges lower it, SLA credits raise it
    provider:<id>    what the network owes the provider: its earnings after the network fee
    stake:<id>       the provider's stake held by the network; slashing takes from it
    network:fees     the network's fee on every GPU- or CPU-second sold
    network:slashed  slashed stake the network keeps (the rest goes to affected tenants)
    external         money entering (stake deposits) or leaving (payouts) the system

Metering is cumulative so rounding never drifts: the charge for a replica's first ``s`` seconds is
``floor(price * units * s / 3600)`` and each meter step posts the difference from the previous
step's cumulative figure. However a run is cut into steps, the total is the same to the micro.
Each transaction has a ``key`` that names what it is for (``usage:<replica>:<second>``); the store
keeps keys unique, so a retried write can never bill twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MICROS = 1_000_000
EXTERNAL = "external"
FEES = "network:fees"
SLASHED = "network:slashed"


def tenant_account(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


def provider_account(provider_id: str) -> str:
    return f"provider:{provider_id}"


def stake_account(provider_id: str) -> str:
    return f"stake:{provider_id}"


class TxKind(StrEnum):
    USAGE = "usage"
    STAKE = "stake"
    SLASH = "slash"
    PAYOUT = "payout"
    REFUND = "refund"


class SlashCause(StrEnum):
    """Why a provider's stake is slashed."""

    LOST_WORK = "lost_work"  # a node vanished with running work
    FAILED_CHALLENGE = "failed_challenge"  # measured far below the GPU it claims
    UNDRAINED_OFFBOARD = "undrained_offboard"  # left without draining
    SLA_BREACH = "sla_breach"  # a day under the uptime SLA


@dataclass(frozen=True)
class MarketConfig:
    """The network's money rules. Amounts in micro-USD; ``fee_bps`` in basis points. No defaults
    here: the values live once, in ``runner/data/network.yaml`` (``runner.core.network.default_network``)."""

    fee_bps: int  # the network's share of every sale
    cpu_price_per_core_hour: int  # what CPU-only work costs where a node names no price
    slash: Mapping[SlashCause, int]
    #: Share of a slash credited to the tenant whose work it hurt (basis points); the rest is kept.
    credit_bps: int
    #: What admission reserves of a budget for work that names no timeout: this many seconds of
    #: it (``runner.core.budget``).
    reserve_s_without_timeout: float


@dataclass(frozen=True)
class Posting:
    account: str
    amount: int


@dataclass(frozen=True)
class Transaction:
    """A balanced set of postings with a unique key and references for bills and audits."""

    key: str
    kind: TxKind
    postings: tuple[Posting, ...]
    memo: str = ""
    refs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.postings:
            raise ValueError(f"transaction {self.key}: no postings")
        for p in self.postings:
            if not isinstance(p.amount, int) or isinstance(p.amount, bool):
                raise TypeError(f"transaction {self.key}: amount {p.amount!r} of {p.account} is not an integer")
        total = sum(p.amount for p in self.postings)
        if total != 0:
            raise ValueError(f"transaction {self.key} does not balance: postings sum to {total}")


def _tx(key: str, kind: TxKind, memo: str, refs: Mapping[str, Any], *postings: tuple[str, int]) -> Transaction:
    """A transaction without zero postings (a zero posting says nothing and clutters bills)."""
    kept = tuple(Posting(account, amount) for account, amount in postings if amount != 0)
    return Transaction(key=key, kind=kind, postings=kept or (Posting(EXTERNAL, 0),), memo=memo, refs=dict(refs))


# ----------------------------------------------------------------------------- metering
def units_milli(units: float) -> int:
    """GPUs or CPU cores in thousandths, so half a core is exact."""
    return int(round(units * 1000))


def cumulative_charge(price_per_hour: int, milli_units: int, seconds: int) -> int:
    """What the first ``seconds`` of a replica cost, rounded down to the micro."""
    return price_per_hour * milli_units * seconds // 3_600_000


def fee_of(amount: int, fee_bps: int) -> int:
    return amount * fee_bps // 10_000


def usage(
    *,
    replica_key: str,
    tenant: str,
    provider: str,
    node: str,
    workload_id: str,
    price_per_hour: int,
    milli_units: int,
    from_s: int,
    to_s: int,
    fee_bps: int,
) -> Transaction | None:
    """The charge for seconds ``[from_s, to_s)`` of a replica's run, or None when nothing accrued.

    Tenant pays the difference of cumulative charges; the network keeps the difference of
    cumulative fees; the provider earns the rest.
    """
    if to_s <= from_s:
        return None
    charge = cumulative_charge(price_per_hour, milli_units, to_s) - cumulative_charge(
        price_per_hour, milli_units, from_s
    )
    fee = fee_of(cumulative_charge(price_per_hour, milli_units, to_s), fee_bps) - fee_of(
        cumulative_charge(price_per_hour, milli_units, from_s), fee_bps
    )
    refs = {
        "workload": workload_id,
        "replica": replica_key,
        "node": node,
        "tenant": tenant,
        "provider": provider,
        "from_s": from_s,
        "to_s": to_s,
        "price_per_hour": price_per_hour,
        "milli_units": milli_units,
    }
    return _tx(
        f"usage:{replica_key}:{to_s}",
        TxKind.USAGE,
        f"{to_s - from_s}s of {replica_key} on {node}",
        refs,
        (tenant_account(tenant), -charge),
        (provider_account(provider), charge - fee),
        (FEES, fee),
    )


def estimate_cost(price_per_hour: int, milli_units: int, replicas: int, seconds: float) -> int:
    """Upper estimate of what a workload costs if it runs ``seconds`` on every replica."""
    return replicas * cumulative_charge(price_per_hour, milli_units, int(seconds + 0.999))


# ----------------------------------------------------------------------------- stakes and slashing
def stake_deposit(provider: str, amount: int, key: str) -> Transaction:
    if amount <= 0:
        raise ValueError(f"a stake deposit must be positive, got {amount}")
    return _tx(
        key,
        TxKind.STAKE,
        f"stake deposit by {provider}",
        {"provider": provider},
        (EXTERNAL, -amount),
        (stake_account(provider), amount),
    )


def payout(provider: str, amount: int, key: str) -> Transaction:
    if amount <= 0:
        raise ValueError(f"a payout must be positive, got {amount}")
    return _tx(
        key,
        TxKind.PAYOUT,
        f"payout to {provider}",
        {"provider": provider},
        (provider_account(provider), -amount),
        (EXTERNAL, amount),
    )


def slash(
    *,
    provider: str,
    stake_balance: int,
    cause: SlashCause,
    config: MarketConfig,
    key: str,
    node: str = "",
    tenant: str | None = None,
    memo: str = "",
) -> Transaction | None:
    """Take the configured amount for ``cause`` from the stake (never more than is there); credit
    ``credit_bps`` of it to the affected tenant, the network keeps the rest. None: nothing to take."""
    amount = min(config.slash[cause], max(stake_balance, 0))
    if amount <= 0:
        return None
    credit = amount * config.credit_bps // 10_000 if tenant else 0
    refs = {"provider": provider, "node": node, "cause": cause.value, "tenant": tenant, "credit": credit}
    return _tx(
        key,
        TxKind.SLASH,
        memo or f"{cause.value} on {node}",
        refs,
        (stake_account(provider), -amount),
        *(((tenant_account(tenant), credit),) if tenant else ()),
        (SLASHED, amount - credit),
    )


def preemption_refund(
    *, victim_tenant: str, session_tenant: str, amount: int, key: str, refs: Mapping[str, Any]
) -> Transaction | None:
    """The tenant whose session stopped another tenant's job pays that tenant back ``amount``, what
    the job's thrown-away attempt was billed (``budget.spent_by_replicas``): priority buys the room,
    not the right to waste another's money. None: nothing to move (its own job, or nothing billed)."""
    if victim_tenant == session_tenant or amount <= 0:
        return None
    return _tx(
        key,
        TxKind.REFUND,
        f"preempted for a session of {session_tenant}",
        {**refs, "tenant": victim_tenant, "paid_by": session_tenant},
        (tenant_account(session_tenant), -amount),
        (tenant_account(victim_tenant), amount),
    )


# ----------------------------------------------------------------------------- reading
def balances(transactions: Iterable[Transaction]) -> dict[str, int]:
    out: dict[str, int] = {}
    for tx in transactions:
        for p in tx.postings:
            out[p.account] = out.get(p.account, 0) + p.amount
    return out


@dataclass(frozen=True)
class Statement:
    """What one party sees: its transactions and the totals that matter to it."""

    account: str
    lines: tuple[Transaction, ...]
    totals: Mapping[str, int]


def tenant_statement(tenant: str, transactions: Iterable[Transaction], budget: int | None = None) -> Statement:
    """A tenant's bill: usage charges, SLA credits, preemption refunds (received less paid), net
    owed and budget left."""
    account = tenant_account(tenant)
    lines = tuple(tx for tx in transactions if any(p.account == account for p in tx.postings))

    def net(kind: TxKind) -> int:
        return sum(p.amount for tx in lines if tx.kind is kind for p in tx.postings if p.account == account)

    charges, credits, refunds = -net(TxKind.USAGE), net(TxKind.SLASH), net(TxKind.REFUND)
    owed = charges - credits - refunds  # minus the account's balance: what budget_use.py reads too
    totals = {"charges": charges, "credits": credits, "refunds": refunds, "owed": owed}
    if budget is not None:
        totals["budget"] = budget
        totals["budget_left"] = budget - owed
    return Statement(account=account, lines=lines, totals=totals)


def provider_statement(provider: str, transactions: Iterable[Transaction]) -> Statement:
    """A provider's earnings: gross sales, fees withheld, net earned, slashed, stake left."""
    earn, stake = provider_account(provider), stake_account(provider)
    lines = tuple(tx for tx in transactions if any(p.account in (earn, stake) for p in tx.postings))

    def total(kind: TxKind, account: str) -> int:
        return sum(p.amount for tx in lines if tx.kind is kind for p in tx.postings if p.account == account)

    net = total(TxKind.USAGE, earn)
    fees = sum(p.amount for tx in lines if tx.kind is TxKind.USAGE for p in tx.postings if p.account == FEES)
    totals = {
        "gross": net + fees,
        "fees": fees,
        "earned": net,
        "paid_out": -total(TxKind.PAYOUT, earn),
        "slashed": -total(TxKind.SLASH, stake),
        "stake": total(TxKind.STAKE, stake) + total(TxKind.SLASH, stake),
    }
    return Statement(account=earn, lines=lines, totals=totals)


def to_micros(usd: float) -> int:
    """Dollars (a price, a stake, a cap as people write them) as micro-USD, rounded: the one way in."""
    return int(round(usd * MICROS))


def to_usd(micros: int) -> float:
    """Micro-USD as a float of dollars, for ratios and display only (money itself stays integer)."""
    return micros / MICROS


def usd(micros: int) -> str:
    """Micro-USD as dollars for people: 1234567 -> '1.234567'."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    return f"{sign}{whole}.{frac:06d}"
